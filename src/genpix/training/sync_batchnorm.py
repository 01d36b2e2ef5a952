"""Batch norm over the global batch when a run is split over processes (gloo or NCCL).

Batch norm normalises with the mean and variance of the batch it sees (Ioffe and Szegedy 2015,
Algorithm 1). Under torchrun each rank sees only its rows of the global batch, so plain
``BatchNorm2d`` would normalise with per-rank statistics and a run on N processes would not take
the single-process step. :class:`GlobalBatchNorm2d` all-reduces the statistics over the ranks
(in training mode only; eval mode uses the running statistics, with no collective), with autograd
through the all-reduce, so forward, backward and running statistics are those of the global
batch. ``torch.nn.SyncBatchNorm`` does the same but refuses CPU tensors, and genpix trains under
gloo on CPUs too; one implementation serves both.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn


class AllReduceSum(torch.autograd.Function):
    """The sum of a tensor over all ranks, differentiable: the gradient of each rank's input is
    the sum over ranks of the gradients of the output (d/dx_r sum_k L_k, with L_k = f_k(sum x))."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        total = x.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return AllReduceSum.apply(grad)


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """``BatchNorm2d`` whose training-mode statistics are those of the batch summed over all
    ranks: (B, C, H, W) -> (B, C, H, W). Same parameters, buffers and state-dict keys."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized()
                and dist.get_world_size() > 1):
            return super().forward(x)
        # two passes over the global batch: the mean, then the mean squared deviation
        local = torch.cat([x.sum((0, 2, 3)), x.new_tensor([x.numel() / x.shape[1]])])
        total = AllReduceSum.apply(local)
        n = total[-1]
        mean = total[:-1] / n  # (C,)
        centred = x - mean[None, :, None, None]
        var = AllReduceSum.apply(centred.square().sum((0, 2, 3))) / n  # biased, as normalisation uses
        if self.track_running_stats:
            self._track(mean.detach(), var.detach(), n)
        x_hat = centred * torch.rsqrt(var + self.eps)[None, :, None, None]
        if self.affine:
            x_hat = x_hat * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return x_hat

    @torch.no_grad()
    def _track(self, mean: torch.Tensor, var: torch.Tensor, n: torch.Tensor) -> None:
        """Running statistics as ``F.batch_norm`` keeps them (the variance unbiased)."""
        self.num_batches_tracked.add_(1)
        momentum = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        self.running_mean.lerp_(mean, momentum)
        self.running_var.lerp_(var * n / (n - 1).clamp_min(1), momentum)


def _swap(module: nn.Module, source: type[nn.BatchNorm2d], target: type[nn.BatchNorm2d]) -> None:
    """Replace every ``source`` child of ``module`` (recursively) by a ``target`` sharing its
    parameters and buffers, so optimisers and checkpoints see the very same tensors."""
    for name, child in module.named_children():
        if type(child) is source:
            twin = target(child.num_features, child.eps, child.momentum, child.affine,
                          child.track_running_stats, device=torch.device("meta"))
            twin.weight, twin.bias = child.weight, child.bias
            twin.running_mean, twin.running_var = child.running_mean, child.running_var
            twin.num_batches_tracked = child.num_batches_tracked
            twin.train(child.training)
            setattr(module, name, twin)
        else:
            _swap(child, source, target)


def to_global_batchnorm(module: nn.Module) -> nn.Module:
    """Make ``module``'s ``BatchNorm2d`` layers normalise over the global batch (in place)."""
    _swap(module, nn.BatchNorm2d, GlobalBatchNorm2d)
    return module


def to_local_batchnorm(module: nn.Module) -> nn.Module:
    """Undo :func:`to_global_batchnorm` (in place)."""
    _swap(module, GlobalBatchNorm2d, nn.BatchNorm2d)
    return module
