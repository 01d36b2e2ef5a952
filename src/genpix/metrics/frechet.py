"""The Fréchet distance between two Gaussians fitted to feature sets (Heusel et al. 2017, "FID").

    d^2 = |mu_1 - mu_2|^2 + tr(Sigma_1) + tr(Sigma_2) - 2 tr((Sigma_1 Sigma_2)^(1/2))     (Dowson & Landau 1982)

Everything is float64 numpy. The trace of the matrix square root is taken from the eigenvalues of the
symmetric matrix Sigma_1^(1/2) Sigma_2 Sigma_1^(1/2), which has the same eigenvalues as Sigma_1 Sigma_2
and, unlike the non-symmetric product handed to ``scipy.linalg.sqrtm`` by pytorch-fid, never yields
complex parts; tiny negative eigenvalues from rounding are clipped to 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from genpix.errors import GenpixError


@dataclass(frozen=True)
class GaussianStats:
    """Mean mu (d,) and covariance sigma (d, d) of n feature vectors, float64."""

    mu: np.ndarray
    sigma: np.ndarray
    n: int

    def __post_init__(self) -> None:
        d = self.mu.shape[0]
        if self.mu.ndim != 1 or self.sigma.shape != (d, d):
            raise ValueError(f"mu must be (d,) and sigma (d, d), got {self.mu.shape} and {self.sigma.shape}")


def feature_statistics(features: torch.Tensor | np.ndarray) -> GaussianStats:
    """Fit a Gaussian to features (N, d): the sample mean and the unbiased (N - 1) covariance, as
    pytorch-fid's ``np.cov(rowvar=False)``."""
    x = features.detach().cpu().double().numpy() if isinstance(features, torch.Tensor) else np.asarray(features, np.float64)
    if x.ndim != 2:
        raise ValueError(f"features must be (N, d), got shape {x.shape}")
    if x.shape[0] < 2:
        raise GenpixError(f"a covariance needs at least 2 feature vectors, got {x.shape[0]}")
    if not np.isfinite(x).all():
        raise GenpixError("the feature network returned NaN or infinite features")
    return GaussianStats(mu=x.mean(0), sigma=np.cov(x, rowvar=False).reshape(x.shape[1], x.shape[1]), n=x.shape[0])


def sqrtm_psd(matrix: np.ndarray) -> np.ndarray:
    """The symmetric square root of a symmetric positive semi-definite matrix (eigenvalues clipped at 0)."""
    eigvals, eigvecs = np.linalg.eigh((matrix + matrix.T) / 2)
    return (eigvecs * np.sqrt(np.clip(eigvals, 0, None))) @ eigvecs.T


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """tr((Sigma_1 Sigma_2)^(1/2)) = sum_i sqrt(lambda_i(Sigma_1^(1/2) Sigma_2 Sigma_1^(1/2)))."""
    root1 = sqrtm_psd(sigma1)
    middle = root1 @ sigma2 @ root1
    eigvals = np.linalg.eigvalsh((middle + middle.T) / 2)
    return float(np.sqrt(np.clip(eigvals, 0, None)).sum())


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """The squared Fréchet (2-Wasserstein) distance between N(mu1, sigma1) and N(mu2, sigma2)."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError(f"the two Gaussians differ in dimension: {mu1.shape} vs {mu2.shape}")
    diff = mu1 - mu2
    d2 = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt_product(sigma1, sigma2)
    return max(float(d2), 0.0)  # rounding can leave -1e-12 for identical inputs


def frechet_distance_stats(a: GaussianStats, b: GaussianStats) -> float:
    return frechet_distance(a.mu, a.sigma, b.mu, b.sigma)
