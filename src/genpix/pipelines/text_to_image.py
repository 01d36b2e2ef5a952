"""Stable-Diffusion-style text-to-image: latent diffusion with a CLIP text encoder (Rombach et al.
2022, "High-Resolution Image Synthesis with Latent Diffusion Models").

Composed from passed-in parts: a CLIP tokenizer and text model, the text-conditioned latent U-Net
(eps or v prediction, Salimans and Ho 2022), the KL autoencoder and the training schedule's
``alphas_cumprod``. The loop, written out in :meth:`StableDiffusionPipeline.__call__`:

1. tokenize and encode the prompt and the negative prompt (which takes the empty prompt's place as
   classifier-free guidance's unconditional branch, Ho and Salimans 2022) -> (1, 77 k, D) each,
   as sd-webui does: emphasis weights and 75-token chunks (pipelines/prompt_chunks.py);
2. initial latents (4, H/8, W/8) ~ N(0, I) from each image's seed (seed + i), or ``latents=``;
3. the network wrapped as a denoiser D(x, sigma, context) -> x0 (Karras et al. 2022), guided by
   CFGDenoiser, sampled with the named sd-webui sampler over its schedule's sigmas;
4. decode z / scaling_factor with the autoencoder; images in [0, 1], sd-webui infotexts;
5. the safety checks (pipelines/safety.py; by default the prompt blocklist, pipelines/prompt_blocklist.py,
   and a diffusers folder's safety checker, models/safety_checker.py): images they flag are replaced
   by black ones, with a warning naming the checks; ``info["nsfw"]`` holds the flags (None with no checks).

img2img starts from the encoded init image noised to the strength's sigma (SDEdit, Meng et al.
2022); SD inpainting models (9 input channels) also see the mask and the masked image's latents;
ordinary models inpaint with the latent mask (diffusion/inpainting.py, pipelines/masking.py).

Sampler conventions (what sd-webui does, and diffusers with the matching scheduler): the
k-diffusion samplers start from noise * sigma_max (diffusers' Euler-family init_noise_sigma with
"linspace" spacing); sd-webui's timestep samplers (DDIM, PLMS, UniPC; and DDPM) start from x_T =
noise itself, i.e. noise * sqrt(sigma_max^2 + 1) in the sigma form; DDIM and PLMS end at
alpha_bar_0 rather than 1 (diffusers' set_alpha_to_one=False, CompVis' ddim_alphas_prev), so their
last sigma is sigma(t=0) and the result is scaled back to the variance-preserving form.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from genpix.diffusion import samplers, schedules
from genpix.diffusion.denoiser import CFGDenoiser, DiscreteDenoiser
from genpix.diffusion.inpainting import MaskedDenoiser
from genpix.errors import GenpixError
from genpix.io.images import format_infotext, to_pil
from genpix.models.autoencoder import AutoencoderKL
from genpix.models.cpu_prepack import prepack_on_cpu
from genpix.models.sd_unet import SDUNet
from genpix.models.text import CLIPTextModel
from genpix.models.tokenizer import CLIPTokenizer
from genpix.pipelines import masking
from genpix.pipelines.diffusion import _counting
from genpix.pipelines.output import PipelineOutput
from genpix.pipelines.prompt_blocklist import PromptBlocklist
from genpix.pipelines.prompt_chunks import chunk_prompt, encode_chunks
from genpix.pipelines.prompt_text import check_prompt_text
from genpix.pipelines.safety import CombinedCheck, ImageSafetyCheck, SafetyCheck, default_checks

DEFAULT_STEPS, DEFAULT_SAMPLER, DEFAULT_CFG_SCALE = 20, "Euler a", 7.0
VP_START = frozenset({"DDIM", "PLMS", "UniPC", "DDPM"})  # start from x_T = noise (sd_samplers_timesteps)
END_AT_ALPHA_0 = frozenset({"DDIM", "PLMS"})  # final alpha_bar is alphas_cumprod[0] (set_alpha_to_one False)
SIZE_MULTIPLE = 8  # sd-webui's rule for width and height


class StableDiffusionPipeline:
    """pipe(prompt, negative_prompt="", steps=20, sampler="Euler a", cfg_scale=7.0, seed=0,
    width=None, height=None, latents=None, n=1) -> PipelineOutput.

    Image i draws everything random (posterior samples, initial noise, sampler noise) from one
    generator seeded seed + i, in diffusers' order, so it is the same whatever ``n`` or
    ``batch_size``. ``clip_skip`` is sd-webui's "Clip skip" (1: the last layer). ``safety_checks``
    run on the decoded images (pipelines/safety.py): None is the prompt blocklist alone, () none.
    ``dtype``: the U-Net's and the text encoder's (float16 for ``--half`` on CUDA); the autoencoder
    stays in float32, as sd-webui's ``--no-half-vae`` keeps it (SD's decoder overflows in float16)."""

    family = "sd"
    dtype = torch.float32  # of the U-Net and the text encoder (the autoencoder always runs in float32)
    parameters = frozenset({"n", "seed", "prompt", "negative_prompt", "steps", "sampler", "cfg_scale", "width",
                            "height", "schedule", "eta", "s_churn", "s_noise", "latents", "callback", "clip_skip",
                            "init_images", "strength", "mask", "mask_blur", "inpainting_fill", "invert_mask"})

    def __init__(self, tokenizer: CLIPTokenizer, text_model: CLIPTextModel, unet: SDUNet, vae: AutoencoderKL,
                 alphas_cumprod: torch.Tensor, *, prediction: str = "eps", model_name: str = "sd",
                 device: torch.device | str = "cpu", batch_size: int = 4,
                 safety_checks: Sequence[SafetyCheck] | None = None, dtype: torch.dtype = torch.float32) -> None:
        if unet.config.cross_attention_dim != text_model.config.hidden_size:
            raise GenpixError(f"the U-Net attends to {unet.config.cross_attention_dim}-d text tokens but the text "
                              f"encoder gives {text_model.config.hidden_size}-d ones")
        self.device = torch.device(device)
        self.dtype = dtype
        self.tokenizer = tokenizer
        self.text_model = text_model.eval().requires_grad_(False).to(self.device, dtype)
        self.unet = unet.eval().requires_grad_(False).to(self.device, dtype)
        self.vae = vae.eval().requires_grad_(False).to(self.device)
        self.prediction, self.model_name, self.batch_size = prediction, model_name, batch_size
        self.denoiser = DiscreteDenoiser(self._network, alphas_cumprod, prediction)
        self.factor = vae.config.downsampling_factor
        self.safety = CombinedCheck((PromptBlocklist(),) if safety_checks is None else safety_checks)

    @property
    def default_size(self) -> int:
        """The image side the U-Net was trained at (512 for SD 1.x, 768 for 768-v)."""
        return self.unet.config.sample_size * self.factor

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the images it makes by default (what an img2img input is resized to)."""
        return 3, self.default_size, self.default_size

    def _network(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor,
                 concat: torch.Tensor | None = None) -> torch.Tensor:
        """The U-Net on x_t (B, 4, h, w), with an inpainting model's mask and masked-image latents
        (B, 5, h, w) concatenated on the channels (unscaled, as the LDM ``c_concat``)."""
        x = x if concat is None else torch.cat([x, concat], dim=1)
        return self.unet(x.to(self.dtype), t, context.to(self.dtype)).float()

    def encode_prompt(self, prompt: str, clip_skip: int = 1) -> torch.Tensor:
        """Per-token embeddings (1, 77 k, D) of one prompt, as sd-webui encodes it
        (pipelines/prompt_chunks.py): emphasis ``(word:1.2)``, ``(word)``, ``[word]``, ``BREAK``,
        and 75-token chunks encoded one by one. The text encoder's last layer (clip_skip 1) or the
        one ``clip_skip - 1`` before it, through the final LayerNorm. A plain prompt of up to 75
        tokens is diffusers' (1, 77, D)."""
        layers = self.text_model.config.num_hidden_layers
        if not 1 <= clip_skip <= layers:
            raise GenpixError(f"clip_skip must be between 1 and {layers} (sd-webui's Clip skip), got {clip_skip}")
        chunks = chunk_prompt(self.tokenizer, prompt, length=self.text_model.config.max_position_embeddings)
        return encode_chunks(self.text_model, chunks, clip_skip=clip_skip - 1).float()

    def encode_prompts(self, prompt: str, negative_prompt: str,
                       clip_skip: int = 1) -> tuple[torch.Tensor, torch.Tensor, bool]:
        """(cond, uncond, padded): both of the same length, the one with fewer 77-token chunks
        padded with the empty prompt's chunk (sd-webui's "Pad prompt/negative prompt" option,
        infotext "Pad conds"; sd-webui's default instead runs the two through the U-Net apart),
        so that both go through the U-Net in one batch."""
        cond, uncond = self.encode_prompt(prompt, clip_skip), self.encode_prompt(negative_prompt, clip_skip)
        if cond.shape[1] == uncond.shape[1]:
            return cond, uncond, False
        empty = self.encode_prompt("", clip_skip)  # (1, 77, D): each chunk is encoded on its own

        def padded(z: torch.Tensor) -> torch.Tensor:
            missing = (max(cond.shape[1], uncond.shape[1]) - z.shape[1]) // empty.shape[1]
            return torch.cat([z, *[empty] * missing], dim=1)

        return padded(cond), padded(uncond), True

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents z * scaling_factor (B, 4, h, w) -> images (B, 3, h * f, w * f) in [0, 1] on the CPU."""
        x = self.vae.decode(latents / self.vae.config.scaling_factor)
        return ((x.float() + 1) / 2).clamp(0, 1).cpu()

    def encode(self, images: torch.Tensor, generators: list[torch.Generator]) -> torch.Tensor:
        """Images (B, 3, H, W) in [0, 1] -> latents z * scaling_factor (B, 4, H/f, W/f), z drawn
        from the posterior q(z|x) with generator i for image i."""
        posterior = self.vae.encode(images.float() * 2 - 1)
        eps = torch.stack([torch.randn(posterior.mean.shape[1:], generator=g) for g in generators])
        return (posterior.mean + posterior.std * eps.to(self.device)) * self.vae.config.scaling_factor

    def preview_images(self, denoised: torch.Tensor) -> list:
        """PIL pictures of a step callback's ``denoised`` latents (the server's live preview)."""
        with torch.no_grad():
            return to_pil(self.decode(denoised.to(self.device)))

    def _check(self, n: int, width: int, height: int, latents: torch.Tensor | None, init: torch.Tensor | None,
               strength: float, mask: torch.Tensor | None) -> tuple[int, int, int]:
        """The latent shape (4, h, w); every inconsistent argument is a one-line error."""
        if n < 1:
            raise GenpixError(f"number of images must be at least 1, got {n}")
        multiple = max(SIZE_MULTIPLE, self.factor)
        if width < multiple or height < multiple or width % multiple or height % multiple:
            raise GenpixError(f"width and height must be positive multiples of {multiple}, got {width}x{height}")
        shape = (self.unet.config.out_channels, height // self.factor, width // self.factor)
        if mask is None and self.unet.config.in_channels != shape[0]:
            raise GenpixError(f"{self.model_name} is an inpainting model ({self.unet.config.in_channels} input "
                              f"channels): give it an init image and a mask")
        if latents is not None and tuple(latents.shape) != (n, *shape):
            raise GenpixError(f"latents must be {(n, *shape)} for {n} images of {width}x{height}, "
                              f"got {tuple(latents.shape)}")
        if init is None:
            if mask is not None:
                raise GenpixError("a mask needs the image to inpaint (init_images)")
            return shape
        if not 0 <= strength <= 1:
            raise GenpixError(f"strength must be between 0 and 1, got {strength}")
        for name, tensor, channels in (("init images", init, self.image_shape[0]), ("mask", mask, 1)):
            if tensor is not None and (tensor.ndim != 4 or tensor.shape[0] not in (1, n) or
                                       tuple(tensor.shape[1:]) != (channels, height, width)):
                raise GenpixError(f"{name} must be (1 or {n}, {channels}, {height}, {width}) in [0, 1], "
                                  f"got {tuple(tensor.shape)}")
        return shape

    @torch.no_grad()
    def __call__(self, prompt: str = "", negative_prompt: str = "", steps: int | None = None,
                 sampler: str | None = None, cfg_scale: float | None = None, seed: int = 0,
                 width: int | None = None, height: int | None = None, latents: torch.Tensor | None = None, *,
                 n: int = 1, schedule: str | None = None, eta: float | None = None, s_churn: float | None = None,
                 s_noise: float | None = None, clip_skip: int = 1,
                 callback: Callable[[dict[str, Any]], None] | None = None, init_images: torch.Tensor | None = None,
                 strength: float | None = None, mask: torch.Tensor | None = None, mask_blur: int = 0,
                 inpainting_fill: int = 1, invert_mask: bool = False,
                 prompt_embeds: torch.Tensor | None = None) -> PipelineOutput:
        """Generate ``n`` images (B, 3, height, width) for ``prompt``; ``latents`` (n, 4, h, w) are
        unit-variance starting noise, scaled as the sampler needs.

        img2img (SDEdit, Meng et al. 2022): ``init_images`` (1 or n, 3, H, W) in [0, 1] are encoded
        (a posterior sample from each image's generator, then its noise, in diffusers' order), noised
        to the level ``strength`` (default 0.75) of the way to pure noise and denoised back: of
        ``steps`` steps the last int(strength * steps) run, as in sd-webui and diffusers.
        Inpainting, with a 9-channel U-Net: ``mask`` (1 or n, 1, H, W), 1 (>= 0.5) where to repaint;
        the U-Net also sees the mask and the latents of the image with that region blanked (the
        SD inpainting models' conditioning); strength defaults to 1 (start from pure noise).
        With an ordinary 4-channel U-Net the mask is a latent mask (diffusion/inpainting.py): outside
        it the latents follow the original's, and the original is pasted back over the decoded
        result (so those pixels come back unchanged); ``mask_blur``, ``inpainting_fill`` (0 fill,
        1 original, 2 latent noise, 3 latent nothing; not used by 9-channel models, whose
        conditioning is the masked image) and ``invert_mask`` as sd-webui's; strength defaults to 0.75.
        ``prompt_embeds`` (1, L, D), e.g. a point between two prompts' embeddings, replaces the encoded
        prompt (``prompt`` then only labels the infotext); it must match the negative prompt's shape."""
        prompt = check_prompt_text(prompt or "", "prompt")
        negative_prompt = check_prompt_text(negative_prompt or "", "negative prompt")
        steps = DEFAULT_STEPS if steps is None else steps
        cfg_scale = DEFAULT_CFG_SCALE if cfg_scale is None else float(cfg_scale)
        nine_channels = self.unet.config.in_channels != self.unet.config.out_channels
        strength = (1.0 if nine_channels else 0.75) if strength is None else float(strength)
        if init_images is not None:
            height, width = height or init_images.shape[-2], width or init_images.shape[-1]
        width, height = width or self.default_size, height or self.default_size
        entry, schedule = samplers.resolve(sampler or DEFAULT_SAMPLER, schedule)  # unknown names fail first
        samplers.check_steps(steps)
        options = {k: v for k, v in (("eta", eta), ("s_churn", s_churn), ("s_noise", s_noise)) if v is not None}
        samplers.check_options(entry, options)
        shape = self._check(n, width, height, latents, init_images, strength, mask)
        if mask is not None:
            masking.check_inpainting(mask_blur, inpainting_fill)
            mask = masking.prepare_mask(mask, mask_blur, invert_mask)
        unchanged = mask is not None and masking.nothing_to_repaint(mask)  # all black: no sampling
        latent_mask = mask is not None and not nine_channels
        seeds = [seed + i for i in range(n)]

        # 1. the text conditions: (1, 77 k, D) each, the negative prompt in the empty prompt's place
        if prompt_embeds is None:
            cond, uncond, padded = self.encode_prompts(prompt, negative_prompt, clip_skip)
        else:
            cond, uncond, padded = prompt_embeds.to(self.device), self.encode_prompt(negative_prompt, clip_skip), False
            if cond.shape != uncond.shape:
                raise GenpixError(f"prompt_embeds must have the negative prompt's shape {tuple(uncond.shape)}, "
                                  f"got {tuple(cond.shape)}")
        # 2. the sigmas the sampler visits (img2img: the last int(strength * steps) of them)
        sigmas = self.denoiser.sigmas(steps, schedule)
        if entry.name in END_AT_ALPHA_0:
            sigmas = torch.cat([sigmas[:-1], self.denoiser.table[:1]])
        if init_images is not None:
            sigmas = sigmas[steps - min(steps, int(strength * steps)):]  # 0 steps leave the last sigma
        pure_noise = init_images is None or (mask is not None and strength == 1)
        start = (sigmas[0] ** 2 + 1) ** 0.5 if entry.name in VP_START else sigmas[0]  # pure noise's scale
        end = (sigmas[-1] ** 2 + 1) ** 0.5  # x_vp = x / sqrt(1 + sigma^2); 1 when the last sigma is 0
        progress = None if callback is None else _counting(callback, (len(sigmas) - 1) * -(-n // self.batch_size))
        parts = []
        for first in range(0, n, self.batch_size):
            chunk = slice(first, first + self.batch_size)
            if unchanged:
                parts.append(_rows(init_images, n, chunk).float().cpu())
                continue
            generators = [torch.Generator().manual_seed(s) for s in seeds[chunk]]
            given = None if latents is None else latents[chunk].float()
            init, inpaint = _rows(init_images, n, chunk), _rows(mask, n, chunk)
            x, extra, noise = self._start(generators, shape, given, None if latent_mask else init,
                                          None if latent_mask else inpaint,
                                          sigmas[0], start, pure_noise and not latent_mask)
            # 3. classifier-free guidance around the denoiser (Ho and Salimans 2022, eq. 6)
            b = x.shape[0]
            c, u = {"context": cond.expand(b, -1, -1), **extra}, {"context": uncond.expand(b, -1, -1), **extra}
            denoiser = _Conditioned(self.denoiser, c) if cfg_scale == 1 else CFGDenoiser(self.denoiser, c, u, cfg_scale)
            if latent_mask:  # the latent mask around the guided denoiser (diffusion/inpainting.py)
                z0, content, grid = masking.masked_start(init, inpaint, inpainting_fill,
                                                         lambda im: self.encode(im.to(self.device), generators),
                                                         generators)
                x = noise * start if pure_noise else content + noise * sigmas[0]
                denoiser = MaskedDenoiser(denoiser, z0, grid, noise)
            x0 = x if len(sigmas) < 2 else entry(denoiser, x, sigmas, generator=generators, callback=progress,
                                                  **options)
            # 4. back to pixels (an ordinary model's inpainting: the original pasted back outside the mask)
            if latent_mask:
                x0 = denoiser.finish(x0, sigmas[-1])
            images = self.decode(x0 / end)
            parts.append(masking.overlay(images, init, inpaint) if latent_mask else images)
        images = torch.cat(parts)
        # 5. the safety checks (diffusers' run_safety_checker): flagged images become black
        nsfw = None
        if self.safety.checks:
            checked = self.safety.run(images, [prompt] * n)
            images, nsfw = checked.images, checked.flags
            if any(nsfw):
                warnings.warn(f"potential NSFW content was detected in {sum(nsfw)} of {n} images by the "
                              f"{' and the '.join(checked.flagged_by)}: they were replaced by black images "
                              f"(try another prompt or seed)", stacklevel=2)
        params = {"Steps": steps, "Sampler": entry.name, "Schedule type": schedules.SCHEDULE_LABELS[schedule],
                  "CFG scale": cfg_scale, "Eta": eta, "Sigma churn": s_churn, "Sigma noise": s_noise}
        after = {"Size": f"{width}x{height}", "Model": self.model_name,
                 "Denoising strength": strength if init_images is not None else None,
                 **(masking.inpainting_params(mask_blur, inpainting_fill if latent_mask else None)
                    if mask is not None else {}),
                 "Clip skip": clip_skip if clip_skip != 1 else None, "Pad conds": True if padded else None}
        infotexts = [format_infotext({**params, "Seed": s, **after}, prompt, negative_prompt) for s in seeds]
        info = {"seeds": seeds, "prompt": prompt, "negative_prompt": negative_prompt, "model": self.model_name,
                "family": self.family, "steps": steps, "sampler": entry.name, "schedule": schedule,
                "cfg_scale": cfg_scale, "width": width, "height": height, "prediction": self.prediction,
                "clip_skip": clip_skip, "strength": strength if init_images is not None else None, "nsfw": nsfw}
        return PipelineOutput(to_pil(images), images, infotexts, info)

    def _start(self, generators: list[torch.Generator], shape: tuple[int, int, int], latents: torch.Tensor | None,
               init: torch.Tensor | None, mask: torch.Tensor | None, sigma: torch.Tensor, start: torch.Tensor,
               pure_noise: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
        """The sampler's x at sigma, the inpainting conditioning and the unit noise; random draws from
        each image's generator in diffusers' order: init latents (img2img), noise, masked-image latents.
        (With a latent mask the caller encodes the init after the noise: ``init`` is None then.)"""
        init = None if init is None else init.to(self.device)
        z0 = None if pure_noise or init is None else self.encode(init, generators)
        noise = latents if latents is not None else torch.stack([torch.randn(shape, generator=g) for g in generators])
        noise = noise.to(self.device)
        x = noise * start if z0 is None else z0 + noise * sigma  # x_t = z0 + sigma_t eps (Ho et al. 2020 eq. 4)
        if mask is None:
            return x, {}, noise
        mask = (mask.to(self.device).float() >= 0.5).float()  # binarised, as diffusers' mask processor
        # the region to repaint blanked to 0 in [-1, 1] (grey), as the inpainting models were trained
        masked = self.encode(init * (1 - mask) + 0.5 * mask, generators)
        small = F.interpolate(mask, size=shape[1:])  # nearest, to the latent grid
        return x, {"concat": torch.cat([small, masked], dim=1)}, noise

def _rows(images: torch.Tensor | None, n: int, chunk: slice) -> torch.Tensor | None:
    """Rows ``chunk`` of one image per sample (a single image serves them all)."""
    return None if images is None else images.expand(n, -1, -1, -1)[chunk]


class _Conditioned:
    """The denoiser with fixed conditions (guidance scale 1: one pass, no unconditional branch)."""

    def __init__(self, denoiser: DiscreteDenoiser, cond: dict[str, torch.Tensor]) -> None:
        self.denoiser, self.cond = denoiser, cond

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, **extra: Any) -> torch.Tensor:
        return self.denoiser(x, sigma, **self.cond, **extra)


def load_sd_pipeline(path, device: str | torch.device = "cpu", *, tokenizer=None, vae=None,
                     prediction: str | None = None, download_tokenizer: bool = False,
                     safety_checker: bool = True, blocklist: str | None = None,
                     half: bool = False) -> StableDiffusionPipeline:
    """A Stable Diffusion 1.x/2.x diffusers folder or single-file checkpoint as a pipeline
    (io/sd_loader.py): ``tokenizer`` a folder with vocab.json and merges.txt, ``vae`` an external
    autoencoder file, ``prediction`` "eps" or "v" to override the model's. Safety checks
    (pipelines/safety.py): the prompt blocklist, with the terms of the file ``blocklist`` and
    $GENPIX_BLOCKLIST added, and a folder's safety checker (models/safety_checker.py);
    ``safety_checker`` False runs none of them. ``half``: the U-Net and the text encoder in float16,
    on CUDA only (float16 convolutions are slow or missing on CPUs)."""
    from genpix.io.sd_loader import load_sd_components

    if half and torch.device(device).type != "cuda":
        raise GenpixError(f"--half needs a CUDA device (float16 is for GPUs); this runs on {torch.device(device)}")

    checks = default_checks(safety_checker, blocklist)  # a bad blocklist file fails before the loading
    parts = load_sd_components(path, tokenizer=tokenizer, vae=vae, prediction=prediction,
                               download_tokenizer=download_tokenizer, safety_checker=safety_checker)
    if parts.safety_checker is not None:
        checks += (ImageSafetyCheck(parts.safety_checker.eval().to(device)),)
    pipe = StableDiffusionPipeline(parts.tokenizer, parts.text_model, parts.unet, parts.vae, parts.alphas_cumprod,
                                   prediction=parts.prediction, model_name=parts.name, device=device,
                                   safety_checks=checks, dtype=torch.float16 if half else torch.float32)
    prepack_on_cpu(pipe.device, pipe.unet, pipe.vae)  # oneDNN weight layouts, once (models/cpu_prepack.py)
    return pipe
