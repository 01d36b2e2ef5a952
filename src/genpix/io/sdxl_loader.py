"""Stable Diffusion XL models from disk into genpix's own modules (Podell et al. 2023).

Two layouts, as users have them:

- a diffusers folder of ``StableDiffusionXLPipeline`` (base), ``StableDiffusionXLImg2ImgPipeline``
  (the refiner: ``text_encoder`` null, only ``text_encoder_2``) or ``StableDiffusionXLInpaintPipeline``:
  ``unet/``, ``vae/``, ``text_encoder/`` (CLIP ViT-L), ``text_encoder_2/`` (OpenCLIP bigG as
  transformers' CLIPTextModelWithProjection), ``tokenizer/``, ``tokenizer_2/``, ``scheduler/``;
- a single ``.safetensors`` / ``.ckpt`` in the SGM layout (Stability-AI/generative-models):
  ``model.diffusion_model.*`` (LDM U-Net names plus ``label_emb``), ``first_stage_model.*``,
  ``conditioner.embedders.0.transformer.*`` (ViT-L) and ``conditioner.embedders.1.model.*``
  (bigG in open_clip names; the refiner's bigG is ``conditioner.embedders.0.model.*``).

The family is read from the keys (io/sd_config.py ``recognise_family``): the refiner has bigG alone
and 5 micro-conditioning ids (the aesthetic score), a 9-channel ``input_blocks.0.0`` is an
inpainting U-Net. Shapes give the architecture; SGM's fixed choices fill the rest (64 channels per
head, 256 sinusoids per time id: the tiny test models' width is solved from
``label_emb.0.0`` = pooled + ids x width). Whether a model predicts v is not in its tensors: a
sidecar ``NAME.yaml`` with SGM's ``VScaling`` denoiser (as sd-webui reads it), a ``v_pred`` marker key
(ComfyUI's convention), or ``prediction="v"``. ComfyUI's ``ztsnr`` key marks a model trained with
zero terminal SNR: it predicts v and samples on the rescaled schedule (pipelines/parts.py
``with_noise_schedule``). A single file holds no vocabulary: ``tokenizer=DIR`` serves both encoders
(the second padding with "!", id 0, as open_clip's), or ``tokenizer_2=DIR``.
The training schedule is SD's (scaled_linear 0.00085 to 0.012, 1000 steps; SGM's
LegacyDDPMDiscretization); the VAE's scaling factor is 0.13025.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from genpix.io.checkpoint import CheckpointError, read_json_object
from genpix.io.sd_common import (SD_BETAS, V_PRED_KEY, ZTSNR_KEY, _check_vocab, alphas_cumprod_from_scheduler,
                                 assign_file, assign_weights, load_text_weights, noise_schedule_of,
                                 prediction_from_scheduler, read_ldm_yaml, single_file_tokenizer,
                                 tokenizer_from_folder)
from genpix.io.sd_checkpoint import convert_ldm_unet, convert_ldm_vae, read_state_dict
from genpix.io.sd_clip import find_sdxl_text_encoders
from genpix.io.sd_config import infer_unet_config, infer_vae_config
from genpix.models.autoencoder import AutoencoderConfig, AutoencoderKL
from genpix.models.sd_unet import SDUNet, SDUNetConfig
from genpix.models.text import CLIPTextModel, CLIPTextModelWithProjection
from genpix.models.tokenizer import EOS, CLIPTokenizer

SDXL_PIPELINES = ("StableDiffusionXLPipeline", "StableDiffusionXLImg2ImgPipeline", "StableDiffusionXLInpaintPipeline")
SDXL_VAE_SCALE = 0.13025  # SGM sd_xl_base.yaml scale_factor
BASE_IDS, REFINER_IDS = 6, 5  # (h, w, top, left, h, w); (h, w, top, left, aesthetic score)


@dataclass(frozen=True)
class SDXLComponents:
    """Everything an SDXL pipeline is composed of, loaded and in float32."""

    tokenizer: CLIPTokenizer | None  # CLIP ViT-L's; None for the refiner
    text_model: CLIPTextModel | None
    tokenizer_2: CLIPTokenizer  # pads with "!" (id 0)
    text_model_2: CLIPTextModelWithProjection  # OpenCLIP bigG
    unet: SDUNet
    vae: AutoencoderKL
    alphas_cumprod: torch.Tensor  # (T,) of the training schedule
    prediction: str  # "eps" or "v"
    name: str
    refiner: bool  # micro-conditioning with the aesthetic score (5 time ids)
    safety_checker: None = None  # SDXL folders ship none (SDComponents' field, for the shared loading path)
    noise_schedule: str = "default"  # "ztsnr": trained with zero terminal SNR (io/sd_common.py noise_schedule_of)

    @property
    def kind(self) -> str:
        """"refiner", "inpaint" (9-channel U-Net) or "base"."""
        if self.refiner:
            return "refiner"
        return "inpaint" if self.unet.config.in_channels == 9 else "base"


def checked(components: SDXLComponents) -> SDXLComponents:
    """The components, if the U-Net attends to the text encoders' concatenated widths."""
    widths = [m.config.hidden_size for m in (components.text_model, components.text_model_2) if m is not None]
    if components.unet.config.cross_attention_dim != sum(widths):
        raise CheckpointError(f"{components.name}: the U-Net attends to {components.unet.config.cross_attention_dim}-d "
                              f"text tokens but the text encoders give {' + '.join(map(str, widths))}")
    return components


def is_sdxl_folder(folder: Path) -> bool:
    index = folder / "model_index.json"
    return index.is_file() and read_json_object(index).get("_class_name") in SDXL_PIPELINES


def time_id_count(unet: SDUNetConfig, pooled_dim: int) -> int:
    """How many micro-conditioning ids the U-Net's add_embedding takes (6 base, 5 refiner)."""
    extra = (unet.projection_class_embeddings_input_dim or 0) - pooled_dim
    width = unet.addition_time_embed_dim or 0
    if unet.addition_embed_type != "text_time" or width < 1 or extra % width or extra // width not in (5, 6):
        raise CheckpointError(f"the U-Net's added conditioning ({unet.projection_class_embeddings_input_dim} "
                              f"features) does not fit SDXL's pooled {pooled_dim} + 5 or 6 time ids of {width}")
    return extra // width


# -- diffusers folders ------------------------------------------------------------------------------


def load_sdxl_folder(folder: Path, *, tokenizer: str | Path | None = None,
                     tokenizer_2: str | Path | None = None) -> SDXLComponents:
    """unet/, vae/, text_encoder(_2)/, tokenizer(_2)/, scheduler/ of a diffusers SDXL folder."""
    index = read_json_object(folder / "model_index.json")
    unet_config = SDUNetConfig.from_diffusers(read_json_object(folder / "unet" / "config.json"))
    unet = assign_file(SDUNet, unet_config, folder / "unet")
    vae = assign_file(AutoencoderKL, AutoencoderConfig.from_diffusers(read_json_object(folder / "vae" / "config.json")),
                      folder / "vae")
    text_model_2 = CLIPTextModelWithProjection.from_folder(folder / "text_encoder_2")
    tok_2 = tokenizer_from_folder(tokenizer_2 or tokenizer or folder / "tokenizer_2", pad_token="!")
    _check_vocab(tok_2, text_model_2)
    tok = text_model = None
    if (index.get("text_encoder") or [None])[0] is not None:
        text_model = CLIPTextModel.from_folder(folder / "text_encoder")
        tok = tokenizer_from_folder(tokenizer or folder / "tokenizer")
        _check_vocab(tok, text_model)
    refiner = time_id_count(unet_config, text_model_2.text_projection.out_features) == REFINER_IDS
    scheduler = read_json_object(folder / "scheduler" / "scheduler_config.json")
    return checked(SDXLComponents(tok, text_model, tok_2, text_model_2, unet, vae,
                                  alphas_cumprod_from_scheduler(scheduler), prediction_from_scheduler(scheduler),
                                  folder.name, refiner, noise_schedule=noise_schedule_of(scheduler)))


# -- single files in the SGM layout ---------------------------------------------------------------


def sgm_prediction(path: Path, checkpoint: dict[str, torch.Tensor]) -> str:
    """"v" when the sidecar YAML's denoiser scales for v (SGM ``VScaling``) or the file carries
    ComfyUI's ``v_pred`` or ``ztsnr`` marker key (zero terminal SNR needs v, Lin et al. 2023 sec. 3.2);
    else "eps"."""
    sidecar = path.with_suffix(".yaml")
    if sidecar.is_file():
        params: Any = read_ldm_yaml(sidecar).get("model", {}).get("params", {})
        scaling = ((params.get("denoiser_config") or {}).get("params") or {}).get("scaling_config") or {}
        return "v" if str(scaling.get("target", "")).endswith("VScaling") else "eps"
    return "v" if V_PRED_KEY in checkpoint or ZTSNR_KEY in checkpoint else "eps"


def load_sdxl_single_file(path: Path, checkpoint: dict[str, torch.Tensor], *, tokenizer: str | Path | None = None,
                          tokenizer_2: str | Path | None = None, download_tokenizer: bool = False) -> SDXLComponents:
    """An SGM-layout SDXL checkpoint (base, refiner or inpainting), already read."""
    found_l, found_g, pooled = find_sdxl_text_encoders(checkpoint)
    ids = REFINER_IDS if found_l is None else BASE_IDS
    key = "model.diffusion_model.label_emb.0.0.weight"
    if key not in checkpoint:
        raise CheckpointError(f"{path.name}: SDXL text encoders but no {key} in the U-Net")
    width, rest = divmod(checkpoint[key].shape[1] - pooled, ids)
    if rest or width < 1:
        raise CheckpointError(f"{path.name}: {key} takes {checkpoint[key].shape[1]} features, not the pooled "
                              f"{pooled} and {ids} time ids of SDXL")
    unet_config = infer_unet_config(checkpoint, addition_time_embed_dim=width)
    vae_config = infer_vae_config(checkpoint, scaling_factor=SDXL_VAE_SCALE, sample_size=1024)
    prediction = sgm_prediction(path, checkpoint)
    unet = assign_weights(SDUNet, unet_config, convert_ldm_unet(checkpoint, unet_config), f"{path} (U-Net)", path)
    vae = assign_weights(AutoencoderKL, vae_config, convert_ldm_vae(checkpoint, vae_config), f"{path} (autoencoder)",
                         path)
    tok_2 = single_file_tokenizer(path, "!", tokenizer_2 or tokenizer, download_tokenizer)
    text_model_2 = load_text_weights(CLIPTextModelWithProjection, found_g.state, tok_2, path, found_g.config, pooled)
    tok = text_model = None
    if found_l is not None:
        tok = single_file_tokenizer(path, EOS, tokenizer, download_tokenizer)
        config = replace(found_l.config, eos_token_id=tok.eos_id)
        text_model = load_text_weights(CLIPTextModel, found_l.state, tok, path, config)
    return checked(SDXLComponents(tok, text_model, tok_2, text_model_2, unet, vae,
                                  alphas_cumprod_from_scheduler(SD_BETAS), prediction, path.stem, found_l is None,
                                  noise_schedule=noise_schedule_of(checkpoint=checkpoint)))


def load_sdxl(path: Path, *, checkpoint: dict[str, torch.Tensor] | None = None, **kwargs: Any) -> SDXLComponents:
    """A diffusers SDXL folder or an SGM single file (``checkpoint``: its tensors, when already read)."""
    if path.is_dir():
        kwargs.pop("download_tokenizer", None)
        return load_sdxl_folder(path, **kwargs)
    return load_sdxl_single_file(path, checkpoint if checkpoint is not None else read_state_dict(path), **kwargs)
