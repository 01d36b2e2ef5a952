"""txt2img, img2img and inpainting as small functions over the pipeline's parts, for one chunk of
images (each with its own generator).

Where sampling starts and ends is the sampler table's (diffusion/samplers.py): k-diffusion samplers
start from noise * sigma_max, the timestep samplers (``vp_start``) from x_T = noise itself, i.e.
noise * sqrt(sigma_max^2 + 1) in the sigma form; DDIM and PLMS end at alphas_cumprod[0] for models
whose schedule says so (``Parts.set_alpha_to_one`` False), so their last sigma is sigma(t=0) and the
result is scaled back to the variance-preserving form, x / sqrt(1 + sigma^2).

- txt2img: x = noise * start (Ho et al. 2020; Karras et al. 2022).
- img2img (SDEdit, Meng et al. 2022): the init images encoded (a posterior sample first, then the
  noise, in diffusers' order) and noised to the sigma where the last int(strength * steps) steps
  begin: x_t = z0 + sigma_t eps (Ho et al. 2020 eq. 4 in the sigma form).
- inpainting with a 9-channel U-Net: the network also sees the mask and the latents of the image
  with the region blanked (the SD inpainting models' conditioning).
- inpainting with any other model: the latent mask (diffusion/inpainting.py): outside it x follows
  the original noised to each step's sigma, the masked content chosen as sd-webui's
  (pipelines/masking.py), and the original pasted back over the decoded result.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from genpix.diffusion.denoiser import CFGDenoiser, ClippedDenoiser
from genpix.diffusion.inpainting import MaskedDenoiser
from genpix.diffusion.noise import VariationNoise, variation_noise
from genpix.diffusion.noise import image_seeds as noise_seeds
from genpix.errors import GenpixError
from genpix.pipelines import masking
from genpix.pipelines.capabilities import Plan
from genpix.pipelines.fast import final_decoder, less_work
from genpix.pipelines.parts import Parts
from genpix.pipelines.refiner import SwitchingDenoiser


def rows(images: torch.Tensor | None, n: int, chunk: slice) -> torch.Tensor | None:
    """Rows ``chunk`` of one image per sample (a single image serves them all)."""
    return None if images is None else images.expand(n, -1, -1, -1)[chunk]


def sigmas_for(parts: Parts, plan: Plan) -> torch.Tensor:
    """The sigmas the sampler visits (img2img: the last int(strength * steps) of them)."""
    request, denoiser = plan.request, parts.denoiser
    sigmas = denoiser.sigmas(request.steps, plan.schedule)
    if plan.sampler.ends_at_first_alpha and not parts.set_alpha_to_one:
        sigmas = torch.cat([sigmas[:-1], denoiser.table[:1]])
    if request.init is not None:
        steps = request.steps
        sigmas = sigmas[steps - min(steps, int(request.strength * steps)):]  # 0 steps leave the last sigma
    return sigmas


class Conditioned:
    """The denoiser with fixed conditions (guidance scale 1, or nothing to guide: one pass)."""

    def __init__(self, denoiser, cond: dict[str, torch.Tensor]) -> None:
        self.denoiser, self.cond = denoiser, cond

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, **extra: Any) -> torch.Tensor:
        return self.denoiser(x, sigma, **self.cond, **extra)


def guided(parts: Parts, plan: Plan, conds: tuple[dict, dict], b: int, extra: dict[str, torch.Tensor]):
    """Classifier-free guidance around the denoiser (Ho and Salimans 2022, eq. 6), conditions
    expanded to the chunk's ``b`` images; x0 clipped to [-1, 1] for pixel models."""
    cond, uncond = ({k: v.expand(b, *v.shape[1:]) for k, v in c.items()} | extra for c in conds)
    if plan.guided:
        denoiser = CFGDenoiser(parts.denoiser, cond, uncond, plan.request.cfg_scale)
    else:
        denoiser = Conditioned(parts.denoiser, cond)
    return ClippedDenoiser(denoiser) if parts.space.clip_x0 else denoiser


def run_chunk(parts: Parts, plan: Plan, chunk: slice, sigmas: torch.Tensor, conds: tuple[dict, dict],
              mask: torch.Tensor | None, progress, device: torch.device) -> torch.Tensor:
    """Images (b, C, H, W) in [0, 1] on the CPU for rows ``chunk`` of the request; with an ordinary
    model's inpainting, the original pasted back outside the mask."""
    decoder = final_decoder(parts, plan.request)  # the full decoder, or the tiny one (pipelines/fast.py)
    images = decoder.decode(denoise_chunk(parts, plan, chunk, sigmas, conds, mask, progress, device))
    init, inpaint = rows(plan.request.init_images, plan.request.n, chunk), rows(mask, plan.request.n, chunk)
    return masking.overlay(images, init, inpaint) if inpaint is not None and not plan.inpainting_model else images


def denoise_chunk(parts: Parts, plan: Plan, chunk: slice, sigmas: torch.Tensor, conds: tuple[dict, dict],
                  mask: torch.Tensor | None, progress, device: torch.device) -> torch.Tensor:
    """The sampled x0 (b, C, h, w) in the model's space (variance-preserving form) for rows ``chunk``."""
    request, space = plan.request, parts.space
    n = request.n
    seeds, subseeds = image_seeds(request)
    generators = [torch.Generator().manual_seed(seed) for seed in seeds[chunk]]
    init, inpaint = rows(request.init_images, n, chunk), rows(mask, n, chunk)
    latent_mask = inpaint is not None and not plan.inpainting_model
    pure_noise = request.init is None or (inpaint is not None and request.strength == 1)
    start = (sigmas[0] ** 2 + 1) ** 0.5 if plan.sampler.vp_start else sigmas[0]  # pure noise's scale
    shape = (space.latent_channels, request.height // space.factor, request.width // space.factor)
    noise = None if request.latents is None else _latents(request.latents, n, shape)[chunk]
    if noise is None and varied(request):  # sd-webui's variation noise first, then the encoding
        noise, generators = variation_noise(_variation(request, seeds[chunk], subseeds[chunk], space.factor), shape)
    z0 = None if pure_noise or latent_mask else _init_latents(space, request, init, chunk, shape, generators, device)
    if noise is None:  # diffusers' order: the init image's posterior sample, then the noise
        noise = torch.stack([torch.randn(shape, generator=g) for g in generators])
    noise = noise.float().to(device)
    x = noise * start if z0 is None else z0 + noise * sigmas[0]  # x_t = z0 + sigma_t eps
    extra = {} if inpaint is None or latent_mask else _inpainting_condition(space, init.to(device), inpaint,
                                                                            shape, generators)
    if latent_mask:
        known, content, grid = masking.masked_start(init.to(device), inpaint, request.inpainting_fill,
                                                    lambda im: space.encode(im, generators), generators)
        x = noise * start if pure_noise else content + noise * sigmas[0]
    with less_work(parts, request, shape[1:]) as fast:  # DeepCache, token merging (pipelines/fast.py)
        denoiser = guided(fast, plan, conds[:2], x.shape[0], extra)
        refiner = conds[2] if len(conds) > 2 else None
        if refiner is not None:  # the refiner takes the last steps (pipelines/refiner.py)
            denoiser = SwitchingDenoiser(denoiser, guided(refiner.parts, refiner.plan, refiner.conds, x.shape[0], {}),
                                         refiner.sigma)
        if latent_mask:  # the latent mask around the guided denoiser (diffusion/inpainting.py)
            denoiser = MaskedDenoiser(denoiser, known, grid, noise)
        x0 = x if len(sigmas) < 2 else plan.sampler(denoiser, x, sigmas, generator=generators, callback=progress,
                                                     **plan.sampler_options)
    if latent_mask:
        x0 = denoiser.finish(x0, sigmas[-1])
    return x0 / (sigmas[-1] ** 2 + 1) ** 0.5  # x_vp = x / sqrt(1 + sigma^2); 1 when the last sigma is 0


def _init_latents(space, request, init: torch.Tensor | None, chunk: slice, shape: tuple[int, int, int],
                  generators: list[torch.Generator], device: torch.device) -> torch.Tensor:
    """img2img's z0: the init images encoded (a posterior sample from each image's generator), or the
    init latents as given."""
    if init is not None:
        return space.encode(init.to(device), generators)
    latents = rows(request.init_latents, request.n, chunk)
    if tuple(latents.shape[1:]) != shape:
        raise GenpixError(f"init latents must be (1 or {request.n}, {', '.join(map(str, shape))}), "
                          f"got {tuple(request.init_latents.shape)}")
    return latents.float().to(device)


def varied(request) -> bool:
    """Whether the request asks for sd-webui's variation noise (diffusion/noise.py)."""
    return bool(request.subseed_strength or request.eta_noise_seed_delta or
                (request.seed_resize_from_h > 0 and request.seed_resize_from_w > 0))


def image_seeds(request) -> tuple[list[int], list[int]]:
    """Per image (seed, subseed): seed + i without a variation strength; with one, every image keeps
    the seed and the subseed counts up (sd-webui's process_images); ``seeds`` / ``subseeds`` when given."""
    seeds, subseeds = noise_seeds(request.seed, request.subseed, request.subseed_strength, request.n)
    for name, given in (("seeds", request.seeds), ("subseeds", request.subseeds)):
        if given is not None and len(given) != request.n:
            raise GenpixError(f"{name} must list one seed per image ({request.n}), got {len(given)}")
    return list(request.seeds or seeds), list(request.subseeds or subseeds)


def _variation(request, seeds: list[int], subseeds: list[int], factor: int) -> VariationNoise:
    return VariationNoise(tuple(seeds), tuple(subseeds), request.subseed_strength, request.seed_resize_from_h,
                          request.seed_resize_from_w, request.eta_noise_seed_delta, factor)


def _latents(latents: torch.Tensor, n: int, shape: tuple[int, int, int]) -> torch.Tensor:
    if tuple(latents.shape) != (n, *shape):
        raise GenpixError(f"latents must be {(n, *shape)} for {n} images, got {tuple(latents.shape)}")
    return latents


def _inpainting_condition(space, init: torch.Tensor, mask: torch.Tensor, shape: tuple[int, int, int],
                          generators: list[torch.Generator]) -> dict[str, torch.Tensor]:
    """A 9-channel model's extra input: the mask on the latent grid and the latents of the image with
    the region to repaint blanked to 0 in [-1, 1] (grey), as the inpainting models were trained."""
    mask = (mask.to(init.device).float() >= 0.5).float()  # binarised, as diffusers' mask processor
    masked = space.encode(init * (1 - mask) + 0.5 * mask, generators)
    small = F.interpolate(mask, size=shape[1:])  # nearest, to the latent grid
    return {"concat": torch.cat([small, masked], dim=1)}
