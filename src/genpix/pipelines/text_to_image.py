"""Stable Diffusion 1.x/2.x as parts of the one pipeline (Rombach et al. 2022, "High-Resolution
Image Synthesis with Latent Diffusion Models"): the CLIP conditioner with sd-webui's prompt syntax,
the cross-attention U-Net (eps or v prediction, Salimans and Ho 2022) behind a discrete denoiser on
the training schedule's ``alphas_cumprod``, the KL autoencoder's latent space, and the safety
checks (the prompt blocklist by default, and a diffusers folder's safety checker).

The generation itself, identical for every family, is pipelines/pipeline.py and pipelines/modes.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch

from genpix.diffusion import schedules
from genpix.diffusion.denoiser import DiscreteDenoiser
from genpix.errors import GenpixError
from genpix.io.sd_loader import SDComponents, load_sd_components
from genpix.io.sdxl_loader import SDXLComponents
from genpix.models.cpu_prepack import prepack_on_cpu
from genpix.pipelines.capabilities import Capabilities, Defaults
from genpix.pipelines.conditioning import CLIPConditioner
from genpix.pipelines.decoders import AutoencoderSpace
from genpix.pipelines.extra_networks import ExtraNetworks
from genpix.pipelines.parts import LatentUNet, Parts, with_noise_schedule
from genpix.pipelines.pipeline import DiffusionPipeline
from genpix.pipelines.preview import TinyDecoderSpace
from genpix.pipelines.prompt_blocklist import PromptBlocklist, default_checks
from genpix.pipelines.safety import CombinedCheck, ImageSafetyCheck, SafetyCheck
from genpix.pipelines.sdxl import sdxl_pipeline

SD_DEFAULTS = Defaults(steps=20, sampler="Euler a", cfg_scale=7.0)  # sd-webui's txt2img defaults
SIZE_MULTIPLE = 8  # sd-webui's rule for width and height


def sd_pipeline(components: SDComponents, *, device: torch.device | str = "cpu",
                safety_checks: Sequence[SafetyCheck] | None = None, dtype: torch.dtype = torch.float32) -> DiffusionPipeline:
    """A Stable Diffusion pipeline from its loaded components (io/sd_loader.py). ``safety_checks``:
    None is the prompt blocklist alone, () none. ``dtype``: the U-Net's and the text encoder's
    (float16 for ``--half`` on CUDA); the autoencoder stays in float32 (pipelines/decoders.py)."""
    tokenizer, text_model, unet, vae = components.tokenizer, components.text_model, components.unet, components.vae
    prediction, model_name = components.prediction, components.name
    if unet.config.cross_attention_dim != text_model.config.hidden_size:
        raise GenpixError(f"the U-Net attends to {unet.config.cross_attention_dim}-d text tokens but the text "
                          f"encoder gives {text_model.config.hidden_size}-d ones")
    device = torch.device(device)
    text_model = text_model.eval().requires_grad_(False).to(device, dtype)
    unet = unet.eval().requires_grad_(False).to(device, dtype)
    space = AutoencoderSpace(vae, device)
    checks = CombinedCheck((PromptBlocklist(),) if safety_checks is None else safety_checks)
    parts = Parts(CLIPConditioner(tokenizer, text_model, dtype),
                  DiscreteDenoiser(LatentUNet(unet, dtype), components.alphas_cumprod, prediction), space, checks,
                  set_alpha_to_one=False, modules=(("unet", unet), ("text_encoder", text_model), ("vae", space.vae)))
    parts = with_noise_schedule(parts, components.noise_schedule)
    side = unet.config.sample_size * space.factor  # 512 for SD 1.x, 768 for 768-v
    caps = Capabilities("sd", model_name, "text", (side, side), channels=vae.config.out_channels,
                        defaults=SD_DEFAULTS, size_multiple=max(SIZE_MULTIPLE, space.factor), inpaint=True,
                        inpainting_model=unet.config.in_channels != unet.config.out_channels,
                        clip_layers=text_model.config.num_hidden_layers, zero_terminal_snr=True)
    return DiffusionPipeline(parts, caps, batch_size=4, device=device, info={"prediction": prediction})


@dataclass(frozen=True)
class SDLoading:
    """genpix.load_pipeline's options for a Stable Diffusion 1.x/2.x or SDXL checkpoint (io/sd_loader.py,
    io/sdxl_loader.py); pipelines/__init__.py's registry takes exactly these field names."""

    tokenizer: str | None = None  # a folder with vocab.json and merges.txt (single files carry none)
    tokenizer_2: str | None = None  # SDXL's second encoder's (default: ``tokenizer``, padding with "!")
    vae: str | None = None  # an external autoencoder file
    prediction: str | None = None  # "eps" or "v" to override the model's
    download_tokenizer: bool = False
    safety_checker: bool = True  # False: no safety checks at all (prompt blocklist and SD checker)
    blocklist: str | None = None  # more prompt-blocklist terms, besides $GENPIX_BLOCKLIST's
    half: bool = False  # U-Net and text encoders in float16, on CUDA only (the autoencoder stays float32)
    lora_dir: str | None = None  # <lora:NAME:W> files (default models/Lora, pipelines/extra_networks.py)
    embeddings_dir: str | None = None  # textual-inversion embeddings (default embeddings)
    loras: tuple = ()  # LoRA files always applied, "PATH[:WEIGHT]" (the CLI's --lora)
    preview_decoder: str | None = None  # a TAESD decoder file for live previews and tiny_decode
    # "ztsnr" / "Zero Terminal SNR": sample on the schedule rescaled to zero terminal SNR (sd-webui's
    # sd_noise_schedule); "default": the model's own (already rescaled for a ztsnr-marked file)
    noise_schedule: str = "default"


def load_sd_pipeline(path, device: str | torch.device = "cpu", **options) -> DiffusionPipeline:
    """A Stable Diffusion 1.x/2.x or SDXL (pipelines/sdxl.py) diffusers folder or single-file checkpoint as
    a pipeline, with the options of :class:`SDLoading`. Safety checks: the prompt blocklist and a folder's
    safety checker (models/safety_checker.py)."""
    opts = SDLoading(**options)
    if opts.half and torch.device(device).type != "cuda":
        raise GenpixError(f"--half needs a CUDA device (float16 is for GPUs); this runs on {torch.device(device)}")
    checks = default_checks(opts.safety_checker, opts.blocklist)  # a bad blocklist file fails before the loading
    noise_schedule = schedules.noise_schedule_key(opts.noise_schedule)  # as does a bad noise schedule
    parts = load_sd_components(path, tokenizer=opts.tokenizer, vae=opts.vae, prediction=opts.prediction,
                               download_tokenizer=opts.download_tokenizer, safety_checker=opts.safety_checker,
                               tokenizer_2=opts.tokenizer_2)
    if parts.safety_checker is not None:
        checks += (ImageSafetyCheck(parts.safety_checker.eval().to(device)),)
    if noise_schedule != "default":
        parts = replace(parts, noise_schedule=noise_schedule)
    build = sdxl_pipeline if isinstance(parts, SDXLComponents) else sd_pipeline  # SDXL: pipelines/sdxl.py
    pipe = build(parts, device=device, safety_checks=checks, dtype=torch.float16 if opts.half else torch.float32)
    networks = ExtraNetworks(opts.lora_dir, opts.embeddings_dir, tuple(opts.loras))  # <lora:...>, embeddings
    pipe.parts = replace(pipe.parts, networks=networks)
    if opts.preview_decoder is not None:
        pipe.parts = replace(pipe.parts, preview=tiny_decoder_for(pipe.parts.space, opts.preview_decoder, device))
    modules = dict(pipe.parts.modules)
    prepack_on_cpu(pipe.device, modules["unet"], modules["vae"])  # oneDNN weight layouts, once (models/cpu_prepack.py)
    return pipe


def tiny_decoder_for(space: AutoencoderSpace, path, device) -> TinyDecoderSpace:
    """The TAESD decoder file ``path`` for a model whose autoencoder is ``space``: the same latent
    channels and upsampling factor, or a one-line error."""
    tiny = TinyDecoderSpace.from_file(path, device)
    if (tiny.latent_channels, tiny.factor) != (space.latent_channels, space.factor):
        raise GenpixError(f"{path}: a tiny decoder of {tiny.latent_channels}-channel latents upsampled {tiny.factor}x; "
                          f"this model has {space.latent_channels}-channel latents at 1/{space.factor} size")
    return tiny
