"""Stable Diffusion XL as parts of the one pipeline (Podell et al. 2023).

The same parts as SD 1.x/2.x (pipelines/text_to_image.py) with SDXL's conditioner: both text
encoders, the pooled bigG embedding and the micro-conditioning time ids (pipelines/sdxl_conditioning.py),
whose sizes are the request's (sd-webui: original = target = the image's height and width, crop (0, 0);
the refiner's aesthetic scores 6.0 and 2.5). The U-Net (models/sd_unet.py grown to the SDXL layout)
takes them as ``text_embeds`` and ``time_ids`` beside the context; the VAE (scaling factor 0.13025)
stays in float32 (SDXL's VAE overflows in float16). Native size 1024 x 1024.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import torch

from genpix.diffusion.denoiser import DiscreteDenoiser
from genpix.io.sdxl_loader import SDXLComponents
from genpix.pipelines.capabilities import MICRO_FIELDS, Capabilities, Defaults, Plan
from genpix.pipelines.decoders import AutoencoderSpace
from genpix.pipelines.parts import LatentUNet, Parts, with_noise_schedule
from genpix.pipelines.pipeline import DiffusionPipeline
from genpix.pipelines.prompt_blocklist import PromptBlocklist
from genpix.pipelines.safety import CombinedCheck, SafetyCheck
from genpix.pipelines.sdxl_conditioning import MicroConditioning, SDXLConditioner

SDXL_DEFAULTS = Defaults(steps=20, sampler="Euler a", cfg_scale=7.0)  # sd-webui's txt2img defaults, as SD's
SIZE_MULTIPLE = 8


class SDXLPipeline(DiffusionPipeline):
    """The one pipeline; the conditioner is set to each request's size before encoding.

    ``micro`` (:class:`MicroConditioning`) holds what sd-webui keeps as settings rather than request
    fields: the crop's top-left corner (``sdxl_crop_top/left``), the refiner's aesthetic scores
    (``sdxl_refiner_high/low_aesthetic_score``), and fixed original / target sizes (None: the image's)."""

    micro: MicroConditioning = MicroConditioning()

    def _conditions(self, plan: Plan) -> tuple[dict, dict, dict[str, Any]]:
        request = plan.request
        sized = copy.copy(self)  # no shared state changes: concurrent requests of other sizes are safe
        given = {k: getattr(request, k) for k in MICRO_FIELDS if getattr(request, k) is not None}
        micro = replace(self.micro, **{k: tuple(v) if isinstance(v, (list, tuple)) else float(v)
                                       for k, v in given.items()})  # the request's, else the settings'
        conditioner = self.parts.conditioner.with_size(request.width, request.height, micro)
        sized.parts = replace(self.parts, conditioner=conditioner)
        return DiffusionPipeline._conditions(sized, plan)


def sdxl_pipeline(components: SDXLComponents, *, device: torch.device | str = "cpu",
                  safety_checks: Sequence[SafetyCheck] | None = None,
                  dtype: torch.dtype = torch.float32) -> SDXLPipeline:
    """An SDXL (base, refiner or inpainting) pipeline from its loaded components (io/sdxl_loader.py).
    ``safety_checks``: None is the prompt blocklist alone, () none. ``dtype``: the U-Net's and the text
    encoders' (float16 for ``--half`` on CUDA); the autoencoder stays in float32."""
    device = torch.device(device)
    text_models = [m.eval().requires_grad_(False).to(device, dtype) if m is not None else None
                   for m in (components.text_model, components.text_model_2)]
    unet = components.unet.eval().requires_grad_(False).to(device, dtype)
    space = AutoencoderSpace(components.vae, device)
    conditioner = SDXLConditioner(components.tokenizer, text_models[0], components.tokenizer_2, text_models[1],
                                  refiner=components.refiner)
    checks = CombinedCheck((PromptBlocklist(),) if safety_checks is None else tuple(safety_checks))
    modules = (("unet", unet), ("text_encoder", text_models[0]), ("text_encoder_2", text_models[1]),
               ("vae", space.vae))
    parts = Parts(conditioner, DiscreteDenoiser(LatentUNet(unet, dtype), components.alphas_cumprod,
                                                components.prediction),
                  space, checks, set_alpha_to_one=False, modules=tuple((k, m) for k, m in modules if m is not None))
    parts = with_noise_schedule(parts, components.noise_schedule)
    side = unet.config.sample_size * space.factor  # 1024
    caps = Capabilities("sdxl", components.name, "text", (side, side), channels=components.vae.config.out_channels,
                        defaults=SDXL_DEFAULTS, size_multiple=max(SIZE_MULTIPLE, space.factor), inpaint=True,
                        inpainting_model=unet.config.in_channels != unet.config.out_channels,
                        clip_layers=conditioner.layers(), micro_conditioning=True, zero_terminal_snr=True)
    return SDXLPipeline(parts, caps, batch_size=4, device=device,
                        info={"prediction": components.prediction, "sdxl": components.kind})
