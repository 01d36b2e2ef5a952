import math

import numpy as np
import pytest
import torch

from genpix.metrics.psnr import psnr
from genpix.metrics.ssim import ssim


def test_psnr_closed_form():
    x = torch.zeros(1, 1, 8, 8)
    y = torch.full((1, 1, 8, 8), 0.1)  # MSE 0.01 -> 20 dB
    assert psnr(x, y).item() == pytest.approx(20.0, abs=1e-4)
    assert math.isinf(psnr(x, x).item())


def test_ssim_identical_is_one_and_noise_lowers_it():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 32, 32, generator=g)
    assert ssim(x, x).tolist() == pytest.approx([1.0, 1.0])
    noisy = (x + 0.2 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    noisier = (x + 0.4 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    assert (ssim(x, noisier) < ssim(x, noisy)).all() and (ssim(x, noisy) < 0.99).all()


def test_ssim_matches_scikit_image():
    from skimage import metrics  # the reference implementation (test extra)
    rng = np.random.default_rng(0)
    a = rng.random((28, 28))
    b = np.clip(a + 0.1 * rng.standard_normal((28, 28)), 0, 1)
    expected = metrics.structural_similarity(a, b, data_range=1.0, gaussian_weights=True, sigma=1.5,
                                             use_sample_covariance=False)
    got = ssim(torch.tensor(a)[None, None], torch.tensor(b)[None, None]).item()
    assert got == pytest.approx(expected, abs=1e-5)
