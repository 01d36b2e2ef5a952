"""Stable Diffusion 1.x / 2.x models from disk into genpix's own modules (Rombach et al. 2022).

Two layouts, as users have them:

- a diffusers-format folder: ``model_index.json``; ``unet/``, ``vae/`` (``config.json`` and
  ``diffusion_pytorch_model.safetensors`` or ``.bin``), ``text_encoder/`` (transformers' CLIP),
  ``tokenizer/`` (``vocab.json`` + ``merges.txt``, or transformers 5's ``tokenizer.json``) and
  ``scheduler/scheduler_config.json`` (betas and prediction type). Parameter names are already ours.
- a single ``.safetensors`` / ``.ckpt`` file in the original LDM layout (io/sd_checkpoint.py,
  io/sd_clip.py), its architecture from a sidecar ``NAME.yaml`` (the CompVis inference config, as
  sd-webui reads it) or else from the tensor shapes (io/sd_config.py). Such a file holds no
  tokenizer vocabulary: it comes from ``tokenizer=DIR`` or the local caches
  (models/tokenizer.py ``load_clip_tokenizer``).

``vae=FILE`` swaps the autoencoder (sd-webui's external VAE, LDM or diffusers names) and
``prediction="eps" | "v"`` overrides the parameterisation (768-v models without a YAML). Every part
(U-Net, autoencoder, text encoder, safety checker) is built on the meta device and gets its weights
by assignment, converted to float32 tensor by tensor, each half-precision source's mapped pages
given back at once (io/mapped_pages.py): nothing is initialised at random only to be overwritten,
nothing is held twice, and the load peak is about the float32 weights alone. ``.ckpt``/``.bin``
pickles are read only with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import torch

from genpix.errors import GenpixError
from genpix.io.checkpoint import CheckpointError, read_json_object
from genpix.io.safety_checker import load_safety_checker
from genpix.io.sd_checkpoint import convert_ldm_unet, convert_ldm_vae, read_state_dict
from genpix.io.sd_clip import find_text_encoder
from genpix.io.sd_common import (PREDICTIONS, SD_BETAS, ZTSNR_KEY, _check_vocab, alphas_cumprod_from_scheduler,
                                 assign_file, assign_weights, load_text_weights, noise_schedule_of,
                                 prediction_from_scheduler, read_ldm_yaml, single_file_tokenizer,
                                 tokenizer_from_folder)
from genpix.io.sd_config import (SD2_CONTEXT_DIM, SUPPORTED, configs_from_ldm_yaml, infer_unet_config,
                                 infer_vae_config, recognise_family)
from genpix.models.autoencoder import AutoencoderConfig, AutoencoderKL
from genpix.models.safety_checker import SafetyChecker
from genpix.models.sd_unet import SDUNet, SDUNetConfig
from genpix.models.text import CLIPTextModel
from genpix.models.tokenizer import EOS, CLIPTokenizer

if TYPE_CHECKING:
    from genpix.io.sdxl_loader import SDXLComponents

__all__ = ["SDComponents", "assign_weights", "is_sd_model", "load_sd_components", "load_external_vae"]

SD_PIPELINES = ("StableDiffusionPipeline", "StableDiffusionImg2ImgPipeline", "StableDiffusionInpaintPipeline",
                "StableDiffusionUpscalePipeline")
SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt")


@dataclass(frozen=True)
class SDComponents:
    """Everything a Stable Diffusion pipeline is composed of, loaded and in float32."""

    tokenizer: CLIPTokenizer
    text_model: CLIPTextModel
    unet: SDUNet
    vae: AutoencoderKL
    alphas_cumprod: torch.Tensor  # (T,) of the training schedule
    prediction: str  # "eps" or "v" (or "x0")
    name: str  # the folder's or file's name
    safety_checker: SafetyChecker | None = None  # a diffusers folder's safety_checker/, when it has one
    noise_schedule: str = "default"  # "ztsnr": trained with zero terminal SNR (io/sd_common.py noise_schedule_of)


def is_sd_model(path: str | Path) -> bool:
    """A diffusers-format folder (model_index.json) or a single-file checkpoint."""
    path = Path(path)
    if path.is_dir():
        return (path / "model_index.json").is_file()
    return path.suffix in SINGLE_FILE_SUFFIXES


def load_sd_components(path: str | Path, *, tokenizer: str | Path | None = None, vae: str | Path | None = None,
                       prediction: str | None = None, download_tokenizer: bool = False,
                       safety_checker: bool = True, tokenizer_2: str | Path | None = None) -> SDComponents | SDXLComponents:
    """A diffusers-format folder or an LDM single file -> :class:`SDComponents`, or
    :class:`SDXLComponents` for an SDXL one (io/sdxl_loader.py; ``tokenizer_2`` is its second
    encoder's); ``safety_checker`` False leaves a folder's safety checker unloaded."""
    from genpix.io.sdxl_loader import is_sdxl_folder, load_sdxl

    path = Path(path)
    if prediction is not None and prediction not in ("eps", "v"):
        raise GenpixError(f"unknown prediction type {prediction!r}; choose one of: eps, v")
    if path.is_dir() and is_sdxl_folder(path):
        components = load_sdxl(path, tokenizer=tokenizer, tokenizer_2=tokenizer_2)
    elif path.is_dir():
        components = load_diffusers_folder(path, tokenizer=tokenizer, safety_checker=safety_checker)
    elif path.suffix in SINGLE_FILE_SUFFIXES:
        checkpoint = read_state_dict(path)
        if recognise_family(checkpoint) == "sdxl":
            components = load_sdxl(path, checkpoint=checkpoint, tokenizer=tokenizer, tokenizer_2=tokenizer_2,
                                   download_tokenizer=download_tokenizer)
        else:
            components = load_single_file(path, tokenizer=tokenizer, download_tokenizer=download_tokenizer,
                                          checkpoint=checkpoint)
        del checkpoint
    else:
        raise CheckpointError(f"{path}: not a Stable Diffusion model (a .safetensors/.ckpt file or a "
                              f"diffusers folder with model_index.json)")
    if vae is not None:
        components = replace(components, vae=load_external_vae(vae, components.vae.config))
    if prediction is not None:
        components = replace(components, prediction=prediction)
    return components


# -- diffusers-format folders ---------------------------------------------------------------------


def load_diffusers_folder(folder: Path, *, tokenizer: str | Path | None = None,
                          safety_checker: bool = True) -> SDComponents:
    """unet/, vae/, text_encoder/, tokenizer/, scheduler/ of a diffusers Stable Diffusion folder,
    and safety_checker/ with feature_extractor/ when model_index.json names one."""
    index = read_json_object(folder / "model_index.json")
    kind = index.get("_class_name")
    if kind not in SD_PIPELINES:
        raise CheckpointError(f"{folder}: a {kind} folder; {SUPPORTED} (diffusers folders of "
                              f"{', '.join(SD_PIPELINES[:3])} and the StableDiffusionXL ones)")
    unet_config = SDUNetConfig.from_diffusers(read_json_object(folder / "unet" / "config.json"))
    unet = assign_file(SDUNet, unet_config, folder / "unet")
    vae = assign_file(AutoencoderKL, AutoencoderConfig.from_diffusers(read_json_object(folder / "vae" / "config.json")),
                      folder / "vae")
    text_model = CLIPTextModel.from_folder(folder / "text_encoder")
    tok = tokenizer_from_folder(tokenizer if tokenizer is not None else folder / "tokenizer")
    _check_vocab(tok, text_model)
    scheduler = read_json_object(folder / "scheduler" / "scheduler_config.json")
    checker = None
    if safety_checker and index.get("safety_checker", [None])[0] is not None:
        checker = load_safety_checker(folder / "safety_checker", folder / "feature_extractor")
    return SDComponents(tok, text_model, unet, vae, alphas_cumprod_from_scheduler(scheduler),
                        prediction_from_scheduler(scheduler), folder.name, checker, noise_schedule_of(scheduler))


# -- single files in the LDM layout ---------------------------------------------------------------


def load_single_file(path: Path, *, tokenizer: str | Path | None = None, download_tokenizer: bool = False,
                     checkpoint: dict[str, torch.Tensor] | None = None) -> SDComponents:
    """An LDM-layout checkpoint with its sidecar YAML (``NAME.yaml``) when there is one
    (``checkpoint``: its tensors, when already read)."""
    checkpoint = read_state_dict(path) if checkpoint is None else checkpoint
    sidecar = path.with_suffix(".yaml")
    betas = dict(SD_BETAS)
    layer: Literal["last", "penultimate"] = "penultimate"
    if sidecar.is_file():
        ldm = read_ldm_yaml(sidecar)
        unet_config, vae_config, kind = configs_from_ldm_yaml(ldm)
        params = ldm["model"]["params"]
        if "image_size" in params:  # the latent size (64 for SD 1.x, 96 for 768-v); the U-Net's own is unused
            unet_config = replace(unet_config, sample_size=int(params["image_size"]))
        betas.update(beta_start=params.get("linear_start", 0.00085), beta_end=params.get("linear_end", 0.012),
                     num_train_timesteps=params.get("timesteps", 1000))
        cond = (params.get("cond_stage_config") or {}).get("params") or {}
        layer = "last" if cond.get("layer") == "last" else "penultimate"
        prediction = PREDICTIONS[kind]
    else:
        unet_config, vae_config = infer_unet_config(checkpoint), infer_vae_config(checkpoint)
        prediction = "v" if ZTSNR_KEY in checkpoint else "eps"  # zero terminal SNR needs v (Lin et al. sec. 3.2)
        if unet_config.cross_attention_dim == SD2_CONTEXT_DIM and prediction == "eps":
            warnings.warn(f"{path.name}: an SD 2.x checkpoint without {sidecar.name}: assuming eps prediction; "
                          f"768-v models need --prediction v (or the v2-inference-v.yaml beside the file)",
                          stacklevel=2)
    unet = assign_weights(SDUNet, unet_config, convert_ldm_unet(checkpoint, unet_config), f"{path} (U-Net)", path)
    vae = assign_weights(AutoencoderKL, vae_config, convert_ldm_vae(checkpoint, vae_config), f"{path} (autoencoder)",
                         path)
    found = find_text_encoder(checkpoint, layer=layer)
    tok = single_file_tokenizer(path, "!" if found.kind == "open_clip" else EOS, tokenizer, download_tokenizer)
    config = replace(found.config, eos_token_id=tok.eos_id) if found.kind == "clip" else found.config
    text_model = load_text_weights(CLIPTextModel, found.state, tok, path, config)
    noise_schedule = noise_schedule_of(checkpoint=checkpoint)
    del checkpoint
    return SDComponents(tok, text_model, unet, vae, alphas_cumprod_from_scheduler(betas), prediction, path.stem,
                        noise_schedule=noise_schedule)


def load_external_vae(path: str | Path, config: AutoencoderConfig) -> AutoencoderKL:
    """sd-webui's external VAE: a file of LDM (``encoder.down.0...``) or diffusers
    (``encoder.down_blocks.0...``) autoencoder tensors, bare or under first_stage_model./vae.;
    the architecture is read from it, the scaling factor kept from the model."""
    path = Path(path)
    checkpoint = read_state_dict(path)
    diffusers_keys = {k.removeprefix("vae.") for k in checkpoint if "encoder.down_blocks." in k}
    if diffusers_keys:
        state = {k.removeprefix("vae."): v for k, v in checkpoint.items()}
        return assign_weights(AutoencoderKL, config, state, f"{path} (VAE)", path)
    overrides = {"scaling_factor": config.scaling_factor, "norm_num_groups": config.norm_num_groups,
                 "sample_size": config.sample_size}
    vae_config = infer_vae_config(checkpoint, **overrides)
    return assign_weights(AutoencoderKL, vae_config, convert_ldm_vae(checkpoint, vae_config), f"{path} (VAE)", path)
