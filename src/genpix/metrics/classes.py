"""Mode coverage for labelled data: which classes a generator produces, as judged by a classifier.

The generative trilemma's third corner (coverage): a generator that drops classes (mode collapse)
shows it here even when each sample looks real.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

COVERED_SHARE = 0.1  # a class is covered when it gets at least 10% of its share among real images


@dataclass(frozen=True)
class ClassStats:
    histogram: tuple[int, ...]  # predicted class counts of the generated images
    coverage: float  # fraction of the real images' classes that are covered (see COVERED_SHARE)
    entropy: float  # entropy of the predicted class distribution / log K, in [0, 1] (1 = uniform)


def class_stats(fake_probs: torch.Tensor, real_probs: torch.Tensor) -> ClassStats:
    """Class statistics of generated images from a K-class classifier's probabilities (N, K).

    The expected share of each class comes from the classifier's predictions on the real images, so
    real-against-real covers every class the real images show.
    """
    k = fake_probs.shape[1]
    fake_counts = torch.bincount(fake_probs.argmax(1), minlength=k).double()
    real_counts = torch.bincount(real_probs.argmax(1), minlength=k).double()
    fake_share, real_share = fake_counts / fake_counts.sum(), real_counts / real_counts.sum()
    present = real_share > 0
    covered = (fake_share >= COVERED_SHARE * real_share) & present
    p = fake_share[fake_share > 0]
    entropy = max(0.0, float(-(p * p.log()).sum())) / math.log(k) if k > 1 else 0.0  # 0.0, never -0.0
    return ClassStats(histogram=tuple(int(c) for c in fake_counts), coverage=int(covered.sum()) / int(present.sum()),
                      entropy=entropy)
