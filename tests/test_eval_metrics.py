"""The distribution metrics on inputs whose answer is known in closed form: the Fréchet distance
between Gaussians, unbiased KID, k-NN precision/recall, the Inception Score and class coverage."""

import math

import numpy as np
import pytest
import scipy.linalg
import torch

from genpix.metrics.classes import class_stats
from genpix.metrics.frechet import feature_statistics, frechet_distance
from genpix.metrics.inception_score import inception_score
from genpix.metrics.kid import kernel_inception_distance, mmd2_unbiased
from genpix.metrics.precision_recall import knn_radii, precision_recall


def random_spd(rng: np.random.Generator, d: int) -> np.ndarray:
    a = rng.normal(size=(d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


# --- Fréchet distance -------------------------------------------------------------------------

def test_frechet_distance_of_commuting_gaussians_is_the_closed_form():
    # diagonal covariances: d^2 = |mu1 - mu2|^2 + sum_i (sqrt(a_i) - sqrt(b_i))^2
    mu1, mu2 = np.array([0.0, 1.0, -2.0]), np.array([3.0, 1.0, 2.0])
    a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 4.0, 0.25])
    expected = 25.0 + (1 - 2) ** 2 + 0 + (3 - 0.5) ** 2
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-12)
    # scaled identity in d dimensions: (1 - 2)^2 per dimension
    assert frechet_distance(np.zeros(5), np.eye(5), np.zeros(5), 4 * np.eye(5)) == pytest.approx(5.0)
    # the distance of a Gaussian to itself is 0, and the distance is symmetric
    sigma = random_spd(np.random.default_rng(0), 6)
    assert frechet_distance(mu1[:1].repeat(6), sigma, mu1[:1].repeat(6), sigma) == pytest.approx(0, abs=1e-9)


def test_frechet_distance_of_general_gaussians_matches_the_sqrtm_formula():
    # pytorch-fid's formula: tr(S1) + tr(S2) - 2 tr(sqrtm(S1 S2)) with scipy's non-symmetric sqrtm
    rng = np.random.default_rng(1)
    for d in (1, 2, 8, 40):
        s1, s2 = random_spd(rng, d), random_spd(rng, d)
        mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
        covmean = scipy.linalg.sqrtm(s1 @ s2).real
        reference = float((mu1 - mu2) @ (mu1 - mu2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))
        ours = frechet_distance(mu1, s1, mu2, s2)
        assert ours == pytest.approx(reference, rel=1e-8, abs=1e-10)
        assert frechet_distance(mu2, s2, mu1, s1) == pytest.approx(ours, rel=1e-9)


def test_frechet_distance_of_samples_converges_to_that_of_their_gaussians():
    rng = np.random.default_rng(2)
    d = 4
    s1, s2 = random_spd(rng, d), random_spd(rng, d)
    mu1, mu2 = np.zeros(d), np.full(d, 0.5)
    x = rng.multivariate_normal(mu1, s1, size=200_000)
    y = rng.multivariate_normal(mu2, s2, size=200_000)
    a, b = feature_statistics(torch.from_numpy(x)), feature_statistics(y)
    assert a.n == 200_000 and np.allclose(a.sigma, np.cov(x, rowvar=False))  # the N - 1 covariance
    exact = frechet_distance(mu1, s1, mu2, s2)
    assert frechet_distance(a.mu, a.sigma, b.mu, b.sigma) == pytest.approx(exact, rel=0.02)


def test_feature_statistics_refuses_fewer_than_two_vectors_and_nan():
    from genpix.errors import GenpixError

    with pytest.raises(GenpixError, match="at least 2"):
        feature_statistics(np.zeros((1, 3)))
    with pytest.raises(GenpixError, match="NaN"):
        feature_statistics(np.array([[0.0, 1.0], [np.nan, 2.0]]))


# --- KID ----------------------------------------------------------------------------------------

def direct_unbiased_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    """Bińkowski et al. eq. 4 written as sums over index pairs, k(a, b) = (a.b / d + 1)^3."""
    d = x.shape[1]
    k = lambda a, b: (float(a @ b) / d + 1.0) ** 3  # noqa: E731
    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2 * xy


def test_unbiased_mmd2_matches_the_pairwise_formula():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(9, 5)), rng.normal(0.3, 1.2, size=(11, 5))
    assert mmd2_unbiased(x, y) == pytest.approx(direct_unbiased_mmd2(x, y), rel=1e-10)


def test_kid_is_unbiased_zero_in_expectation_for_one_distribution():
    rng = np.random.default_rng(4)
    draws = np.array([mmd2_unbiased(rng.normal(size=(20, 3)), rng.normal(size=(20, 3))) for _ in range(2000)])
    assert abs(draws.mean()) < 3 * draws.std() / math.sqrt(len(draws))  # 0 within 3 standard errors
    assert (draws < 0).any()  # an unbiased estimate of a zero MMD^2 is sometimes negative
    shifted = np.array([mmd2_unbiased(rng.normal(size=(20, 3)), rng.normal(1.0, 1.0, size=(20, 3)))
                        for _ in range(200)])
    assert shifted.mean() > 10 * draws.std() / math.sqrt(len(draws))


def test_kid_subsets_average_mmd2_and_use_whole_sets_when_small():
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(30, 4)), rng.normal(0.5, 1.0, size=(25, 4))
    whole = kernel_inception_distance(torch.from_numpy(x), y, subsets=5, subset_size=1000)
    assert whole.subset_size == 25 and whole.subsets == 5
    # with 25 rows drawn from 25, every subset of y is all of y: only x's subsets vary
    same = kernel_inception_distance(x[:25], y, subsets=4, subset_size=25)
    assert same.mean == pytest.approx(mmd2_unbiased(x[:25], y), rel=1e-12) and same.std == pytest.approx(0, abs=1e-12)
    with pytest.raises(ValueError, match="at least 2"):
        kernel_inception_distance(x[:1], y)


# --- precision and recall -----------------------------------------------------------------------

def test_knn_radii_are_distances_to_the_kth_other_point():
    points = torch.tensor([[0.0], [1.0], [3.0], [6.0], [10.0]])
    assert knn_radii(points, k=1).tolist() == [1.0, 1.0, 2.0, 3.0, 4.0]
    assert knn_radii(points, k=2).tolist() == [3.0, 2.0, 3.0, 4.0, 7.0]
    with pytest.raises(ValueError, match="more than 3"):
        knn_radii(points[:3], k=3)


def test_precision_recall_on_point_clouds_with_known_answers():
    g = torch.Generator().manual_seed(6)
    cloud = torch.randn(300, 8, generator=g)
    same = precision_recall(cloud, cloud.clone())
    assert (same.precision, same.recall, same.k) == (1.0, 1.0, 3)
    far = precision_recall(cloud, cloud + 100.0)  # disjoint supports
    assert (far.precision, far.recall) == (0.0, 0.0)
    # real: two far-apart clusters of 200 each; generated: exactly the first cluster (mode dropping)
    a, b = torch.randn(200, 8, generator=g), torch.randn(200, 8, generator=g) + 50.0
    dropped = precision_recall(torch.cat([a, b]), a)
    assert (dropped.precision, dropped.recall) == (1.0, 0.5)
    # generated: the real set plus as many far-away outliers: half of it is unrealistic
    outliers = precision_recall(a, torch.cat([a, b]))
    assert (outliers.precision, outliers.recall) == (0.5, 1.0)


def test_precision_recall_is_invariant_to_order():
    g = torch.Generator().manual_seed(7)
    real, fake = torch.randn(150, 5, generator=g), 0.8 * torch.randn(120, 5, generator=g) + 0.3
    first = precision_recall(real, fake)
    again = precision_recall(real[torch.randperm(150, generator=g)], fake[torch.randperm(120, generator=g)])
    assert (first.precision, first.recall) == (again.precision, again.recall)
    assert 0 < first.precision < 1 and 0 < first.recall < 1


# --- Inception Score and class coverage ---------------------------------------------------------

def test_inception_score_of_known_class_probabilities():
    k = 5
    one_hot = torch.eye(k).repeat(4, 1)  # 20 confident predictions, every class equally often
    assert inception_score(one_hot, splits=1) == pytest.approx((k, 0.0))
    assert inception_score(one_hot, splits=4) == pytest.approx((k, 0.0))  # each split holds all classes
    assert inception_score(torch.full((10, k), 1 / k), splits=2) == pytest.approx((1.0, 0.0))
    assert inception_score(torch.eye(k)[[2] * 8], splits=1) == pytest.approx((1.0, 0.0))  # one class only
    # two soft predictions [0.9, 0.1] and [0.1, 0.9]: p(y) = [0.5, 0.5], KL = 0.9 ln 1.8 + 0.1 ln 0.2
    soft = torch.tensor([[0.9, 0.1], [0.1, 0.9]], dtype=torch.float64)
    expected = math.exp(0.9 * math.log(0.9 / 0.5) + 0.1 * math.log(0.1 / 0.5))
    assert inception_score(soft, splits=1)[0] == pytest.approx(expected, rel=1e-12)


def test_inception_score_of_a_classifier_through_the_feature_path():
    """A classifier whose outputs are known: class = the image's brightness bucket."""
    from genpix.eval.features import FeatureExtractor, extract

    k = 4

    def network(x):
        classes = (x.mean(dim=(1, 2, 3)) * k).long().clamp_max(k - 1)
        return x.flatten(1), 50.0 * torch.nn.functional.one_hot(classes, k).float()  # near one-hot softmax

    extractor = FeatureExtractor("bucket", "test", network, 1, 8, class_names=tuple("abcd"))
    levels = torch.tensor([0.1, 0.35, 0.6, 0.85])
    balanced = levels.repeat(6).view(-1, 1, 1, 1).expand(-1, 1, 8, 8)
    probs = extract(extractor, balanced, 1, 8, batch_size=5).probs
    assert probs.argmax(1).tolist() == [0, 1, 2, 3] * 6
    assert inception_score(probs, splits=1)[0] == pytest.approx(k, rel=1e-6)
    collapsed = extract(extractor, balanced[:1].expand(24, -1, -1, -1), 1, 8).probs
    assert inception_score(collapsed, splits=1)[0] == pytest.approx(1.0, rel=1e-6)


def test_class_coverage_and_entropy():
    k = 10
    real = torch.eye(k).repeat(20, 1)  # 200 real images, 20 per class
    full = class_stats(torch.eye(k).repeat(3, 1), real)
    assert full.coverage == 1.0 and full.entropy == pytest.approx(1.0) and full.histogram == (3,) * k
    three = class_stats(torch.eye(k)[[0, 1, 2] * 10], real)
    assert three.coverage == pytest.approx(0.3) and three.entropy == pytest.approx(math.log(3) / math.log(k))
    assert three.histogram == (10, 10, 10) + (0,) * 7
    one = class_stats(torch.eye(k)[[4] * 5], real)
    assert one.entropy == 0.0 and math.copysign(1, one.entropy) == 1 and one.coverage == 0.1
    # class 9 at 0.5% of the generated images is under 10% of its 10% real share: not covered
    rows = [i % 9 for i in range(199)] + [9]
    rare = class_stats(torch.eye(k)[rows], real)
    assert rare.histogram[9] == 1 and rare.coverage == pytest.approx(0.9)
    # classes the real images never show do not count against coverage
    real_half = torch.eye(k)[[i % 5 for i in range(100)]]
    assert class_stats(torch.eye(k)[[0, 1, 2, 3, 4]], real_half).coverage == 1.0
