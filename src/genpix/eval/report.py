"""All the distribution metrics of one generated set against one real set, on one feature network.

Fréchet distance (FID when the features are Inception's), KID, precision and recall, the Inception
Score, and class coverage / entropy when the feature network is a classifier of the real data's classes.
Images are conformed to the network's input (channels, size) and every conversion is noted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from genpix.config import check
from genpix.errors import GenpixError
from genpix.eval.features import Extracted, FeatureExtractor, extract
from genpix.eval.inputs import ImageSet
from genpix.metrics.classes import class_stats
from genpix.metrics.frechet import feature_statistics, frechet_distance_stats
from genpix.metrics.inception_score import inception_score
from genpix.metrics.kid import kernel_inception_distance
from genpix.metrics.precision_recall import precision_recall

MIN_IMAGES = 2


@dataclass(frozen=True)
class EvalOptions:
    kid_subsets: int = 100  # Bińkowski et al.; torch-fidelity and clean-fid use 100 x 1000
    kid_subset_size: int = 1000
    k: int = 3  # neighbourhood of precision / recall (Kynkäänniemi et al.)
    is_splits: int = 10  # Inception Score splits (Salimans et al.)
    batch_size: int = 100
    seed: int = 0  # KID subsets

    def __post_init__(self) -> None:
        check(min(self.kid_subsets, self.kid_subset_size, self.k, self.is_splits, self.batch_size) >= 1,
              "KID subsets, subset size, k, splits and batch size must be at least 1")


@dataclass
class Report:
    metrics: dict[str, Any]  # fid, kid, kid_std, precision, recall, inception_score, ... (None: not applicable)
    info: dict[str, Any]  # features, note, real, fake, n_real, n_fake, ...
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {**self.metrics, **self.info, "notes": self.notes}

    def table(self) -> str:
        m, i = self.metrics, self.info
        lines = [f"{i['real']} ({i['n_real']} images) against {i['fake']} ({i['n_fake']} images)",
                 f"features: {i['features']}: {i['note']}"]
        fid_name = "FID" if i["features"].startswith("inception") else "Fréchet distance"
        lines.append(f"  {fid_name:<18} {m['fid']:.4f}")
        lines.append(f"  {'KID':<18} {m['kid']:.5f} ± {m['kid_std']:.5f}  "
                     f"({i['kid_subsets']} subsets of {i['kid_subset_size']})")
        if m.get("precision") is not None:
            lines.append(f"  {'precision':<18} {m['precision']:.4f}  (k={i['k']})")
            lines.append(f"  {'recall':<18} {m['recall']:.4f}")
        if m.get("inception_score") is not None:
            lines.append(f"  {'Inception Score':<18} {m['inception_score']:.3f} ± {m['inception_score_std']:.3f}"
                         f"  (real images: {m['inception_score_real']:.3f})")
        if m.get("class_coverage") is not None:
            lines.append(f"  {'class coverage':<18} {m['class_coverage']:.3f}  "
                         f"(histogram {' '.join(map(str, m['class_histogram']))})")
            lines.append(f"  {'class entropy':<18} {m['class_entropy']:.4f}  (1 = all classes equally often)")
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)


def _target(extractor: FeatureExtractor, real: ImageSet, fake: ImageSet) -> tuple[int, int | None]:
    """(channels, size) both sets are conformed to; size None: each keeps its own (the network resizes)."""
    channels = extractor.channels or (3 if 3 in (real.channels, fake.channels) else 1)
    if extractor.resizes_input:
        return channels, None
    return channels, extractor.image_size or real.size[0]


def _conversion_notes(image_set: ImageSet, role: str, extractor: FeatureExtractor, channels: int,
                      size: int | None) -> list[str]:
    notes = []
    if image_set.channels != channels:
        kinds = {1: "grayscale", 3: "RGB"}
        notes.append(f"{role} images converted from {kinds[image_set.channels]} to {kinds[channels]} "
                     f"(the feature network's input)")
    h, w = image_set.size
    if extractor.resizes_input:
        side, where = extractor.image_size, "inside the feature network"
    else:
        side, where = size, "(the feature network's input)"
    if side is not None and (h, w) != (side, side):
        notes.append(f"{role} images resized from {w}x{h} to {side}x{side} {where}")
    return notes


def features_of(extractor: FeatureExtractor, image_set: ImageSet, channels: int, size: int | None,
                batch_size: int) -> Extracted:
    h, w = image_set.size
    if size is None and h != w:
        size = max(h, w)
    return extract(extractor, image_set.images, channels, size or h, batch_size)


def evaluate(real: ImageSet, fake: ImageSet, extractor: FeatureExtractor,
             options: EvalOptions = EvalOptions()) -> Report:
    """Compare `fake` with `real` on `extractor`'s features."""
    for role, image_set in (("real", real), ("generated", fake)):
        if len(image_set.images) < MIN_IMAGES:
            raise GenpixError(f"need at least {MIN_IMAGES} {role} images to compare distributions, "
                              f"got {len(image_set.images)} from {image_set.name}")
    channels, size = _target(extractor, real, fake)
    notes = (_conversion_notes(real, "real", extractor, channels, size)
             + _conversion_notes(fake, "generated", extractor, channels, size))
    real_x = features_of(extractor, real, channels, size, options.batch_size)
    fake_x = features_of(extractor, fake, channels, size, options.batch_size)
    n_real, n_fake, dim = len(real_x.features), len(fake_x.features), real_x.features.shape[1]

    kid = kernel_inception_distance(real_x.features, fake_x.features, subsets=options.kid_subsets,
                                    subset_size=options.kid_subset_size, seed=options.seed)
    metrics: dict[str, Any] = {
        "fid": frechet_distance_stats(feature_statistics(real_x.features), feature_statistics(fake_x.features)),
        "kid": kid.mean, "kid_std": kid.std, "precision": None, "recall": None,
        "inception_score": None, "inception_score_std": None, "inception_score_real": None,
        "class_coverage": None, "class_entropy": None, "class_histogram": None}
    if min(n_real, n_fake) > options.k:
        pr = precision_recall(real_x.features, fake_x.features, options.k)
        metrics.update(precision=pr.precision, recall=pr.recall)
    else:
        notes.append(f"precision and recall need more than k={options.k} images on each side: skipped")
    if fake_x.probs is not None and real_x.probs is not None:
        metrics["inception_score"], metrics["inception_score_std"] = inception_score(fake_x.probs, options.is_splits)
        metrics["inception_score_real"] = inception_score(real_x.probs, options.is_splits)[0]
        if extractor.class_names is not None:
            stats = class_stats(fake_x.probs, real_x.probs)
            metrics.update(class_coverage=stats.coverage, class_entropy=stats.entropy,
                           class_histogram=list(stats.histogram))
    if min(n_real, n_fake) <= dim:
        notes.append(f"fewer images ({min(n_real, n_fake)}) than feature dimensions ({dim}): the covariance is "
                     f"singular and the Fréchet distance is unreliable; use more images")
    notes.append("the Fréchet distance is biased upward at small N: compare figures at equal N and features")
    info = {"features": extractor.name, "note": extractor.note, "real": real.name, "fake": fake.name,
            "n_real": n_real, "n_fake": n_fake, "feature_dim": dim, "input_channels": channels,
            "input_size": extractor.image_size if extractor.resizes_input else size, "kid_subsets": kid.subsets,
            "kid_subset_size": kid.subset_size, "k": options.k, "fake_source": fake.info}
    return Report(metrics, info, notes)
