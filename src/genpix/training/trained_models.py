"""Trained models a new run starts from: the frozen autoencoder of a latent model or a preview
decoder (--autoencoder), and the weights a fine-tuning run begins with (--init-from). Each is a run
folder, a model folder or a bundled model's name."""

from __future__ import annotations

from pathlib import Path

import torch

from genpix.config import from_dict, to_dict
from genpix.errors import GenpixError
from genpix.io.bundled import bundled_models
from genpix.io.checkpoint import (CONFIG_NAME, CheckpointError, ModelDir, load_module_weights, read_config,
                                  read_model_dir)
from genpix.models.autoencoder import AutoencoderConfig, AutoencoderKL

# where each kind of model folder keeps its autoencoder: family -> role
TEACHER_ROLES = {"autoencoder": "autoencoder", "ldm": "first_stage"}


def find_trained_model(path: str | Path) -> Path:
    """``path`` as given when it exists, else the bundled model of that name, else ``path`` (which
    reading then reports as no model folder)."""
    return Path(path) if Path(path).exists() else bundled_models().get(str(path), Path(path))


def check_family(config: dict, path: str | Path, flag: str, family: str | None) -> None:
    if family is not None and config.get("family") != family:
        raise GenpixError(f"{flag} {path}: holds a {config.get('family')} model, not an {family} model")


def read_trained_model(path: str | Path, flag: str, family: str | None = None) -> ModelDir:
    """A model folder, or a bundled model's name, of ``family`` when given; a problem is a one-line
    error naming ``flag``."""
    try:
        model = read_model_dir(find_trained_model(path))
    except CheckpointError as error:
        raise GenpixError(f"{flag}: {error}") from None
    check_family(model.config, path, flag, family)
    return model


def read_trained_config(path: str | Path, flag: str, family: str | None = None) -> dict:
    """The config.json of `read_trained_model`, without reading the weights."""
    folder = find_trained_model(path)
    if not (folder / CONFIG_NAME).is_file():  # its one-line error, or the config kept with the weights
        return read_trained_model(path, flag, family).config
    try:
        config = read_config(folder / CONFIG_NAME)
    except CheckpointError as error:
        raise GenpixError(f"{flag}: {error}") from None
    check_family(config, path, flag, family)
    return config


def load_teacher(path: str | Path | ModelDir, flag: str = "--autoencoder") -> AutoencoderKL:
    """An autoencoder run folder, or a latent diffusion model folder or bundled model name (its
    ``first_stage``), or such a folder already read -> the autoencoder with its scaling factor, frozen."""
    model = path if isinstance(path, ModelDir) else read_trained_model(path, flag)
    path = model.path if isinstance(path, ModelDir) else path
    role = TEACHER_ROLES.get(model.family)
    if role is None or role not in model.weights:
        raise GenpixError(f"{flag} {path}: holds a {model.family} model without an autoencoder; give an "
                          f"autoencoder run or a latent diffusion model folder")
    section = model.config["model"] if role == "autoencoder" else model.config["model"].get("first_stage")
    if role == "autoencoder":
        from genpix.training.autoencoder import AutoencoderTrainingConfig

        section = to_dict(from_dict(AutoencoderTrainingConfig, section, where=f"{model.path}/config.json").network())
        if model.config["model"].get("scaling_factor") is None:
            raise GenpixError(f"{flag} {path}: no measured latent scaling factor")
        section["scaling_factor"] = model.config["model"]["scaling_factor"]
    config = from_dict(AutoencoderConfig, section, where=f"{model.path}/config.json first_stage")
    autoencoder = AutoencoderKL(config)
    load_module_weights(autoencoder, {k: v.float() for k, v in model.weights[role].items()},
                        f"{model.path}/model.safetensors ({role})")
    return autoencoder.eval().requires_grad_(False)


def initial_weights(model: ModelDir, flag: str = "--init-from") -> dict[str, torch.Tensor]:
    """The sampling weights of a trained model to fine-tune: its EMA weights (role "ema"), else its
    live ones ("model"), as float32."""
    path = model.path
    role = next((r for r in ("ema", "model") if r in model.weights), None)
    if role is None:
        raise GenpixError(f"{flag} {path}: {model.path}/model.safetensors has no 'ema' or 'model' weights")
    return {k: v.float() for k, v in model.weights[role].items()}
