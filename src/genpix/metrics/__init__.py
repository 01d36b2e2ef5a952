"""Image-quality metrics as plain functions of tensors or features: PSNR, SSIM, Frechet distance,
KID, precision/recall, Inception Score and class statistics.

A leaf of the layers: it imports nothing of genpix but :mod:`genpix.errors`, so training (held-out
PSNR/SSIM) and the evaluation orchestration (:mod:`genpix.eval`: features, reports, benchmarks) both
build on it.
"""
