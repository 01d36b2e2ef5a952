"""The Inception Score (Salimans et al. 2016) from any classifier's class probabilities.

    IS = exp(E_x KL(p(y|x) || p(y)))

computed on `splits` equal parts of the samples, reporting the mean and standard deviation over the
parts, as the original code does (10 splits). High when each sample is confidently one class and the
classes are used evenly. With a domain classifier it is not comparable to published (Inception) IS.
"""

from __future__ import annotations

import torch


def inception_score(probs: torch.Tensor, splits: int = 10) -> tuple[float, float]:
    """(mean, std) of exp(mean KL(p(y|x) || p(y))) over splits of probs (N, K), rows summing to 1."""
    probs = torch.as_tensor(probs).detach().cpu().double()
    if probs.ndim != 2 or probs.shape[0] < 1:
        raise ValueError(f"probabilities must be (N, K), got {tuple(probs.shape)}")
    splits = max(1, min(splits, probs.shape[0]))
    scores = []
    for part in probs.tensor_split(splits):
        p_y = part.mean(0, keepdim=True)  # the marginal p(y) of this part
        kl = torch.where(part > 0, part * (part.log() - p_y.log()), torch.zeros_like(part)).sum(1)
        scores.append(kl.mean().exp())
    scores = torch.stack(scores)
    return float(scores.mean()), float(scores.std(unbiased=False))
