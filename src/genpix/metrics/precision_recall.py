"""Improved precision and recall (Kynkäänniemi, Karras, Laine, Lehtinen and Aila 2019).

Each set of features spans a manifold: the union of balls around its points, each ball's radius the
distance to the point's k-th nearest neighbour within the set (k = 3 in the paper; the point itself
not counted). Precision is the fraction of generated points inside the real manifold (are the samples
realistic?), recall the fraction of real points inside the generated manifold (are all kinds of real
images produced?).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

CHUNK = 1024  # rows of the distance matrix held at once


def _as_tensor(features) -> torch.Tensor:
    return torch.as_tensor(features).detach().cpu().double()


def knn_radii(features: torch.Tensor, k: int = 3) -> torch.Tensor:
    """Distance from each row of (N, d) to its k-th nearest other row, (N,)."""
    features = _as_tensor(features)
    if features.shape[0] <= k:
        raise ValueError(f"k-nearest neighbours with k={k} need more than {k} points, got {features.shape[0]}")
    radii = [torch.cdist(rows, features).kthvalue(k + 1, dim=1).values  # the (k+1)-th is k-th excluding itself
             for rows in features.split(CHUNK)]
    return torch.cat(radii)


def fraction_inside(points: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor) -> float:
    """The fraction of points (N, d) that lie within radii[j] of some centre j (M, d) (eq. 1's f)."""
    points, centres = _as_tensor(points), _as_tensor(centres)
    inside = [(torch.cdist(rows, centres) <= radii).any(dim=1) for rows in points.split(CHUNK)]
    return float(torch.cat(inside).double().mean())


@dataclass(frozen=True)
class PrecisionRecall:
    precision: float
    recall: float
    k: int


def precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = 3) -> PrecisionRecall:
    """Precision = f(fake, real manifold), recall = f(real, fake manifold) (eq. 2)."""
    real, fake = _as_tensor(real), _as_tensor(fake)
    return PrecisionRecall(precision=fraction_inside(fake, real, knn_radii(real, k)),
                           recall=fraction_inside(real, fake, knn_radii(fake, k)), k=k)
