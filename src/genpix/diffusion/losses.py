"""Training objectives: per-sample MSE or MAE between the network output and its target,
optionally weighted by min-SNR-gamma (Hang et al. 2023)."""

from __future__ import annotations

from typing import Literal

import torch

from genpix.diffusion.denoiser import check_prediction
from genpix.errors import GenpixError

LossKind = Literal["mse", "mae"]
LOSSES: tuple[str, ...] = ("mse", "mae")


def min_snr_weight(snr: torch.Tensor, gamma: float, prediction: str) -> torch.Tensor:
    """Per-sample weight (B,) making the loss min(SNR, gamma) times the x0 error (Hang et al. 2023,
    eq. 9), SNR = alpha^2 / sigma_vp^2: eps-prediction min(SNR, gamma) / SNR, v-prediction
    min(SNR, gamma) / (SNR + 1), x0-prediction min(SNR, gamma)."""
    check_prediction(prediction)
    if gamma <= 0:
        raise GenpixError(f"min-SNR gamma must be positive, got {gamma}")
    clipped = snr.clamp(max=gamma)
    if prediction == "eps":
        return clipped / snr
    if prediction == "v":
        return clipped / (snr + 1)
    return clipped


def diffusion_loss(output: torch.Tensor, target: torch.Tensor, kind: str = "mse",
                   weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over the batch of per-sample mean squared (Ho et al. 2020, L_simple eq. 14) or absolute
    (seed 000's MAE on the noise) error, each sample times ``weight`` (B,) when given."""
    if kind not in LOSSES:
        raise GenpixError(f"unknown loss {kind!r}; choose one of: {', '.join(LOSSES)}")
    error = (output.float() - target.float())
    per_sample = (error.square() if kind == "mse" else error.abs()).flatten(1).mean(1)
    if weight is not None:
        per_sample = per_sample * weight
    return per_sample.mean()
