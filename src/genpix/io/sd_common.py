"""Pieces the Stable Diffusion loaders share (io/sd_loader.py for SD 1.x/2.x, io/sdxl_loader.py for
SDXL): weights assigned into modules built on the meta device, the training schedule and
parameterisation of a diffusers scheduler config, tokenizers (folders, or the caches for a single
file that holds no vocabulary), text-encoder weights checked against the vocabulary, CompVis/SGM YAML.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from genpix.config import ConfigError
from genpix.diffusion import schedules
from genpix.errors import GenpixError
from genpix.io.checkpoint import CheckpointError, check_state_dict
from genpix.io.mapped_pages import float32_state
from genpix.io.sd_checkpoint import read_state_dict
from genpix.models.text import CLIPTextModel
from genpix.models.tokenizer import (CLIP_BPE_FILE, CLIP_BPE_URL, EOS, VOCAB_FILES, CLIPTokenizer, TokenizerError,
                                     clip_cache_dir, load_clip_tokenizer, missing_files_message)

TextModel = TypeVar("TextModel", bound=CLIPTextModel)
PREDICTIONS = {"epsilon": "eps", "v_prediction": "v", "sample": "x0"}  # diffusers' prediction_type -> ours
# the LDM configs' training schedule: "linear" in LDM is linear in sqrt(beta), diffusers' scaled_linear
ZTSNR_KEY, V_PRED_KEY = "ztsnr", "v_pred"  # ComfyUI's marker keys of a single file (comfy/supported_models.py)
SD_BETAS = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012, "num_train_timesteps": 1000}


def assign_weights(cls: type[nn.Module], config: Any, state: dict[str, torch.Tensor], where: str,
                   source: str | Path | None = None) -> nn.Module:
    """``cls(config)`` built on the meta device (nothing initialised at random) with ``state``
    (converted to float32) assigned: no second copy of the weights. A missing, unexpected or
    misshapen tensor is named. ``source``: the file ``state`` is mapped from, whose pages of
    converted tensors are given back as they are converted (io/mapped_pages.py)."""
    with torch.device("meta"):
        module = cls(config)
    check_state_dict(module.state_dict(), state, where)
    module.load_state_dict(float32_state(state, source), assign=True)
    return materialised(module.eval(), where)


def assign_file(cls: type[nn.Module], config: Any, folder: Path) -> nn.Module:
    """:func:`assign_weights` from a diffusers part folder's ``diffusion_pytorch_model`` weights file."""
    path = _weights_file(folder, "diffusion_pytorch_model")
    return assign_weights(cls, config, read_state_dict(path), f"{folder}", path)


def materialised(module: nn.Module, where: str) -> nn.Module:
    """``module``, once no parameter or buffer is left on the meta device (a buffer that no file
    holds must be made by the module itself, on a real device: a bug here, not bad input)."""
    left = [name for name, t in [*module.named_parameters(), *module.named_buffers()] if t.is_meta]
    if left:
        raise RuntimeError(f"{where}: {left[0]!r} was not loaded and is still on the meta device")
    return module


def alphas_cumprod_from_scheduler(config: dict[str, Any]) -> torch.Tensor:
    """alpha_bar (T,) of a diffusers scheduler config, computed as diffusers does (float32 betas);
    before any zero-terminal-SNR rescale (:func:`noise_schedule_of`)."""
    if config.get("trained_betas") is not None:
        betas = torch.tensor(config["trained_betas"], dtype=torch.float32)
    else:
        kind = config.get("beta_schedule", "linear")
        kind = "cosine" if kind == "squaredcos_cap_v2" else kind
        betas = schedules.betas(kind, int(config.get("num_train_timesteps", 1000)),
                                float(config.get("beta_start", 0.0001)), float(config.get("beta_end", 0.02)))
    return schedules.alphas_cumprod(betas)


def noise_schedule_of(config: dict[str, Any] | None = None, checkpoint: dict[str, torch.Tensor] | None = None) -> str:
    """"ztsnr" for a model trained with zero terminal SNR (Lin et al. 2023): a diffusers scheduler
    config with ``rescale_betas_zero_snr``, or a single file with ComfyUI's ``ztsnr`` marker key;
    else "default" (schedules.NOISE_SCHEDULE_LABELS)."""
    marked = bool((config or {}).get("rescale_betas_zero_snr")) or ZTSNR_KEY in (checkpoint or {})
    return "ztsnr" if marked else "default"


def prediction_from_scheduler(config: dict[str, Any]) -> str:
    kind = config.get("prediction_type", "epsilon")
    if kind not in PREDICTIONS:
        raise ConfigError(f"scheduler: prediction_type {kind!r} is not one of {', '.join(PREDICTIONS)}")
    return PREDICTIONS[kind]


def tokenizer_from_folder(folder: str | Path, pad_token: str | None = None) -> CLIPTokenizer:
    """vocab.json + merges.txt (hub folders), else transformers 5's tokenizer.json; ``pad_token``
    overrides the folder's (SD 2.x pads with "!")."""
    folder = Path(folder)
    if all((folder / name).is_file() for name in VOCAB_FILES):
        tokenizer = CLIPTokenizer.from_folder(folder)
    elif (folder / "tokenizer.json").is_file():
        tokenizer = _from_tokenizer_json(folder)
    else:
        missing = [name for name in VOCAB_FILES if not (folder / name).is_file()]
        raise TokenizerError(missing_files_message(folder, missing))
    if pad_token is None or pad_token == tokenizer.decoder[tokenizer.pad_id]:
        return tokenizer
    return CLIPTokenizer(tokenizer.encoder, list(tokenizer.ranks), pad_token=pad_token,
                         max_length=tokenizer.max_length)


def _from_tokenizer_json(folder: Path) -> CLIPTokenizer:
    """The BPE vocabulary and merges of a tokenizers-library ``tokenizer.json``; the pad token from
    tokenizer_config.json (transformers writes no vocab.json/merges.txt since version 5)."""
    try:
        model = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))["model"]
        vocab, merges = model["vocab"], [tuple(m.split(" ") if isinstance(m, str) else m) for m in model["merges"]]
        settings = folder / "tokenizer_config.json"
        config = json.loads(settings.read_text(encoding="utf-8")) if settings.is_file() else {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise TokenizerError(f"cannot read the tokenizer in {folder}: {exc}") from None
    pad = config.get("pad_token", EOS)
    pad = pad.get("content", EOS) if isinstance(pad, dict) else pad
    return CLIPTokenizer(vocab, merges, pad_token=pad)


def _weights_file(folder: Path, stem: str) -> Path:
    for name in (f"{stem}.safetensors", f"{stem}.bin", f"{stem}.fp16.safetensors", f"{stem}.fp16.bin"):
        if (folder / name).is_file():
            return folder / name
    raise CheckpointError(f"no {stem}.safetensors (or .bin) in {folder}")


def _check_vocab(tokenizer: CLIPTokenizer, text_model: CLIPTextModel) -> None:
    rows = text_model.config.vocab_size
    if tokenizer.vocab_size > rows:
        raise TokenizerError(f"the tokenizer has {tokenizer.vocab_size} tokens but the text encoder embeds "
                             f"{rows}: it is not this model's tokenizer")


def read_ldm_yaml(path: Path) -> dict[str, Any]:
    """A CompVis inference YAML, parsed with PyYAML's safe loader (no Python objects)."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read {path}: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} is not an LDM config (expected a mapping with model.params)")
    return data


def single_file_tokenizer(path: Path, pad: str, folder: str | Path | None, download: bool) -> CLIPTokenizer:
    """The tokenizer of a file without a vocabulary: ``folder`` or the caches, padding with ``pad``
    (SD 2.x and SDXL's bigG pad with "!", id 0, as open_clip)."""
    if folder is not None:
        return tokenizer_from_folder(folder, pad_token=pad)
    try:
        return load_clip_tokenizer(download=download, pad_token=pad)
    except TokenizerError:
        raise TokenizerError(f"{path.name} holds no tokenizer vocabulary and none was found: pass a folder with "
                             f"vocab.json and merges.txt (--tokenizer DIR; a Stable Diffusion model's tokenizer/ "
                             f"folder), or put {CLIP_BPE_FILE} (from {CLIP_BPE_URL}) in {clip_cache_dir()}") from None


def load_text_weights(cls: type[TextModel], state: dict[str, torch.Tensor], tokenizer: CLIPTokenizer,
                      path: Path, *args: Any) -> TextModel:
    """``cls(*args)`` built on the meta device with a checkpoint's text-encoder ``state``
    (transformers names, mapped from ``path``) assigned in float32, checked against the tokenizer's
    vocabulary."""
    try:
        model = cls.from_state_dict(float32_state(state, path), *args)
    except GenpixError as exc:
        raise CheckpointError(f"{path} (text encoder): {exc}") from None
    _check_vocab(tokenizer, model)
    return materialised(model, f"{path} (text encoder)")
