"""Diffusion maths shared by training and sampling, free of any network or file format.

    from genpix.diffusion import samplers, schedules
    from genpix.diffusion.denoiser import DiscreteEpsDenoiser

schedules: betas / alphas_cumprod of the discrete models, the seed's signal-rate cosine, and the
sigma discretisations used for sampling; denoiser: networks wrapped as D(x, sigma) -> x0;
samplers: pure sampling loops under sd-webui's names; losses: training objectives.
"""

from genpix.diffusion import samplers, schedules

__all__ = ["samplers", "schedules"]
