"""Sanity of the Fréchet distance and its companions on real images (Fashion-MNIST test) with a
briefly trained domain feature network: real against real is near zero, degradation raises it
monotonically, and the order of the images does not matter."""

import pytest
import torch
import torch.nn.functional as F

from genpix.data import load_dataset
from genpix.eval.features import extract, load_extractor
from genpix.eval.features.domain import DomainTrainConfig, save_domain_features, train_domain_net
from genpix.eval.inputs import ImageSet
from genpix.eval.report import EvalOptions, evaluate
from genpix.metrics.frechet import feature_statistics, frechet_distance_stats
from genpix.metrics.kid import kernel_inception_distance
from genpix.metrics.ssim import gaussian_window


@pytest.fixture(scope="module")
def test_images():
    return load_dataset("fashion-mnist", split="test")  # 10000 images, 28x28 grayscale


@pytest.fixture(scope="module")
def extractor(tmp_path_factory):
    """A domain classifier trained for 60 steps (enough for structured features), saved and reloaded."""
    train = load_dataset("fashion-mnist", split="train", limit=6000)
    network = train_domain_net(train.images, train.labels, train.class_names,
                               DomainTrainConfig(steps=60, batch_size=64), torch.device("cpu"))
    path = save_domain_features(tmp_path_factory.mktemp("features") / "fashion", network, train.class_names,
                                {"data": {"spec": "fashion-mnist"}})
    return load_extractor(f"domain:{path}")


def features(extractor, images):
    return extract(extractor, images, 1, 28, batch_size=500).features


def fd(a, b) -> float:
    return frechet_distance_stats(feature_statistics(a), feature_statistics(b))


def blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of uint8 images (B, 1, H, W) -> float in [0, 1]."""
    size = 2 * int(3 * sigma) + 1
    g = gaussian_window(size, sigma).float()
    x = F.pad(images.float() / 255, (size // 2,) * 4, mode="replicate")
    return F.conv2d(F.conv2d(x, g.view(1, 1, 1, size)), g.view(1, 1, size, 1))


def test_real_against_real_is_near_zero_relative_to_noise(extractor, test_images):
    half_a, half_b = test_images.images[:5000], test_images.images[5000:]  # disjoint halves
    a, b = features(extractor, half_a), features(extractor, half_b)
    noise = features(extractor, torch.rand(2000, 1, 28, 28, generator=torch.Generator().manual_seed(0)))
    real_real, real_noise = fd(a, b), fd(a, noise)
    assert real_real < 0.01 * real_noise, (real_real, real_noise)
    kid_real = kernel_inception_distance(a, b, subsets=20, subset_size=1000).mean
    kid_noise = kernel_inception_distance(a, noise, subsets=20, subset_size=1000).mean
    assert abs(kid_real) < 0.01 * kid_noise, (kid_real, kid_noise)


def test_distance_grows_monotonically_with_blur_and_noise(extractor, test_images):
    reference = features(extractor, test_images.images[:3000])
    images = test_images.images[5000:6000]
    blurred = [fd(reference, features(extractor, blur(images, s))) for s in (0.5, 1.0, 1.5, 2.5)]
    assert blurred == sorted(blurred) and blurred[0] > fd(reference, features(extractor, images)), blurred
    g = torch.Generator().manual_seed(1)
    eps = torch.randn(images.shape, generator=g)
    clean = images.float() / 255
    noised = [fd(reference, features(extractor, (clean + s * eps).clamp(0, 1))) for s in (0.05, 0.1, 0.2, 0.4)]
    assert noised == sorted(noised) and noised[0] > fd(reference, features(extractor, images)), noised


def test_metrics_do_not_depend_on_image_order(extractor, test_images):
    real = test_images.images[:600]
    fake = blur(test_images.images[600:1200], 1.0)
    order = torch.randperm(600, generator=torch.Generator().manual_seed(2))
    # KID subsets as large as the sets, and one Inception Score split: then nothing depends on order
    options = EvalOptions(kid_subsets=3, kid_subset_size=600, is_splits=1)
    first = evaluate(ImageSet(real, "real"), ImageSet(fake, "fake"), extractor, options).metrics
    again = evaluate(ImageSet(real.flip(0), "real"), ImageSet(fake[order], "fake"), extractor, options).metrics
    for key in ("fid", "kid", "precision", "recall", "inception_score", "class_coverage", "class_entropy"):
        assert again[key] == pytest.approx(first[key], rel=1e-6, abs=1e-12), key
    assert again["class_histogram"] == first["class_histogram"]


def test_report_of_real_against_real(extractor, test_images):
    labels = test_images.labels
    real = ImageSet(test_images.images[:1000], "fashion-mnist:test[:1000]", labels[:1000], test_images.class_names)
    other = ImageSet(test_images.images[1000:2000], "fashion-mnist:test[1000:2000]")
    report = evaluate(real, other, extractor, EvalOptions(kid_subsets=10, kid_subset_size=500))
    m = report.metrics
    assert m["precision"] > 0.6 and m["recall"] > 0.6
    assert m["class_coverage"] == 1.0 and m["class_entropy"] > 0.5  # a 60-step classifier favours some classes
    assert m["inception_score"] > 1.5 and sum(m["class_histogram"]) == 1000
    assert report.info["features"].startswith("domain:") and "not comparable" in report.info["note"]
    table = report.table()
    assert "Fréchet distance" in table and "FID" not in table.split("\n")[2]
    assert report.to_json()["n_fake"] == 1000
