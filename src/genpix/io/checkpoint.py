"""genpix's model format: a folder with ``config.json`` and ``model.safetensors``.

config.json::

    {"genpix": "0.1.0", "family": "vae", "model": {...}, "data": {...}, "train": {...}, "step": 500}

model.safetensors holds each network's ``state_dict`` under its role's prefix
(``vae.encoder.0.weight``, ``generator.net.0.weight``, ``ema.…``). A training checkpoint adds
``optimizer.safetensors`` (every tensor of the optimisers' states) and ``state.json`` (the rest:
step, param_groups, scalar optimiser state). Pickle is never used.

Weights and config are one unit: model.safetensors carries a copy of config.json in its metadata
(``genpix_config``), written first, so a run killed between the two renames leaves weights whose
own config is read instead of the older config.json beside them, with a warning.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from genpix.errors import GenpixError
from genpix.io.atomic import atomic_directory, check_output_folder, write_atomic
from genpix.version import __version__

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
OPTIMIZER_NAME = "optimizer.safetensors"
STATE_NAME = "state.json"
FAMILIES = ("vae", "gan", "ddpm", "autoencoder", "ldm", "preview-decoder", "upscaler", "lora")
EMBEDDED_CONFIG = "genpix_config"  # model.safetensors metadata: the config.json written with these weights
CONFIG_KEYS = ("genpix", "family", "model", "data", "train", "step", "distributed", "metrics", "notes",
               "sampling")


class CheckpointError(GenpixError):
    """A model folder or checkpoint that is missing, corrupt or of an unknown kind."""


@dataclass
class ModelDir:
    """The contents of a model folder: its config and its weights by role."""

    path: Path
    config: dict[str, Any]
    weights: dict[str, dict[str, torch.Tensor]]  # role -> state_dict

    @property
    def family(self) -> str:
        return self.config["family"]


def flatten_weights(modules: dict[str, torch.nn.Module | dict[str, torch.Tensor]]) -> dict:
    """{role: module or state_dict} -> {"role.key": contiguous CPU tensor}."""
    flat = {}
    for role, module in modules.items():
        state = module.state_dict() if isinstance(module, torch.nn.Module) else module
        for key, tensor in state.items():
            flat[f"{role}.{key}"] = tensor.detach().to("cpu").contiguous()
    return flat


def split_weights(flat: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """Inverse of :func:`flatten_weights`."""
    roles: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in flat.items():
        role, _, rest = key.partition(".")
        roles.setdefault(role, {})[rest] = tensor
    return roles


def read_json_object(path: Path, error: type[Exception] = CheckpointError) -> dict[str, Any]:
    """The JSON object in ``path``; a missing, unreadable or non-object file raises ``error`` naming it."""
    if not path.is_file():
        raise error(f"{path} is missing")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise error(f"{path} is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise error(f"{path} must hold a JSON object")
    return data


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(f"{path} is missing")
    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"{path} is not a readable safetensors file ({error})") from None


def validate_config(config: dict[str, Any], where: str) -> dict[str, Any]:
    unknown = sorted(set(config) - set(CONFIG_KEYS))
    if unknown:
        raise CheckpointError(
            f"{where}: unknown key {unknown[0]!r}; allowed keys: {', '.join(CONFIG_KEYS)}"
        )
    family = config.get("family")
    if family not in FAMILIES:
        raise CheckpointError(
            f"{where}: unknown family {family!r}; known families: {', '.join(FAMILIES)}"
        )
    if not isinstance(config.get("model"), dict):
        raise CheckpointError(f"{where}: 'model' must be an object with the network's config")
    for section in ("data", "train"):
        if not isinstance(config.get(section, {}), dict):
            raise CheckpointError(f"{where}: {section!r} must be an object")
    return config


def read_config(path: str | Path) -> dict[str, Any]:
    """A run's or model's config.json, checked; every problem is a one-line CheckpointError."""
    return validate_config(read_json_object(Path(path)), str(path))


def read_model_dir(path: str | Path) -> ModelDir:
    """Read and check a model folder; every problem is a one-line CheckpointError."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"{path} is not a model folder (expected {CONFIG_NAME} + {WEIGHTS_NAME})")
    weights = split_weights(_read_safetensors(path / WEIGHTS_NAME))
    embedded = _embedded_config(path / WEIGHTS_NAME)
    # config.json is written atomically, so a kill leaves it missing or old, never damaged: a damaged
    # one is an error; a missing or older one gives way to the config stored with the weights
    missing = embedded is not None and not (path / CONFIG_NAME).exists()
    config = None if missing else read_config(path / CONFIG_NAME)
    if embedded is not None and embedded != config:
        warnings.warn(f"{path / CONFIG_NAME} is missing or does not belong to the weights beside it (a run "
                      f"stopped between writing the two?); using the config stored with the weights", stacklevel=2)
        config = validate_config(embedded, f"{path / WEIGHTS_NAME} ({EMBEDDED_CONFIG})")
    return ModelDir(path, config, weights)


def _embedded_config(path: Path) -> dict[str, Any] | None:
    """The config stored in a weights file's metadata by :func:`write_model_dir`, or None."""
    try:
        with safe_open(path, framework="pt") as f:
            text = (f.metadata() or {}).get(EMBEDDED_CONFIG)
        data = json.loads(text) if text is not None else None
    except (SafetensorError, OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_model_dir(path: str | Path, config: dict[str, Any], modules: dict) -> Path:
    """Write model.safetensors (with the config in its metadata) and then config.json into ``path``,
    each file atomically; a reader never pairs the weights with another run's config (see the top)."""
    path = check_output_folder(path, "model folder")
    config = {"genpix": __version__, **config}
    validate_config(config, "config")
    flat = flatten_weights(modules)
    text = json.dumps(config, indent=2)
    write_atomic(path / WEIGHTS_NAME, lambda p: save_file(flat, p, metadata={EMBEDDED_CONFIG: text}))
    write_atomic(path / CONFIG_NAME, lambda p: p.write_text(text))
    return path


def export_model_dir(src: str | Path, dest: str | Path, *, roles: tuple[str, ...] | None = None,
                     dtype: torch.dtype | None = None, notes: dict[str, Any] | None = None,
                     sampling: dict[str, Any] | None = None) -> Path:
    """Copy model folder ``src`` to ``dest`` keeping only ``roles`` (all when None), floating
    weights cast to ``dtype`` (e.g. float16 to halve a bundled model), ``notes`` merged into
    config.json's "notes" (recipe, hardware, measured quality) and ``sampling`` into its "sampling"
    (the model's default steps, sampler and cfg_scale). Each file is written atomically."""
    if Path(src).exists() and Path(dest).exists() and os.path.samefile(src, dest):
        raise CheckpointError(f"export would overwrite its source {src}; choose another OUT folder")
    check_output_folder(dest, "export OUT")
    model = read_model_dir(src)
    keep = tuple(model.weights) if roles is None else roles
    missing = [r for r in keep if r not in model.weights]
    if missing:
        raise CheckpointError(f"{model.path}/{WEIGHTS_NAME} has no {missing[0]!r} weights "
                              f"(it has: {', '.join(model.weights)})")
    cast = {role: {k: v.to(dtype) if dtype is not None and v.is_floating_point() else v
                   for k, v in model.weights[role].items()} for role in keep}
    config = {k: v for k, v in model.config.items() if k != "genpix"}
    for section, values in (("notes", notes), ("sampling", sampling)):
        if values:
            config[section] = {**config.get(section, {}), **values}
    return write_model_dir(dest, config, cast)


# --- optimiser state -------------------------------------------------------------------------


def _split_optimizer_state(states: dict[str, dict]) -> tuple[dict, dict]:
    """{name: optimizer.state_dict()} -> (tensors for safetensors, the JSON-able rest)."""
    tensors, rest = {}, {}
    for name, state in states.items():
        scalars: dict[str, dict[str, Any]] = {}
        for index, values in state["state"].items():
            for key, value in values.items():
                if torch.is_tensor(value):
                    tensors[f"{name}.{index}.{key}"] = value.detach().to("cpu").contiguous()
                else:
                    scalars.setdefault(str(index), {})[key] = value
        rest[name] = {"param_groups": state["param_groups"], "scalars": scalars}
    return tensors, rest


def _join_optimizer_state(tensors: dict, rest: dict) -> dict[str, dict]:
    states = {}
    for name, info in rest.items():
        state: dict[int, dict[str, Any]] = {}
        for index, scalars in info["scalars"].items():
            state.setdefault(int(index), {}).update(scalars)
        # JSON turned tuples (Adam's betas) into lists; params stays a list
        groups = [{k: tuple(v) if isinstance(v, list) and k != "params" else v for k, v in g.items()}
                  for g in info["param_groups"]]
        states[name] = {"state": state, "param_groups": groups}
    for key, tensor in tensors.items():
        name, index, field = key.rsplit(".", 2)
        states[name]["state"].setdefault(int(index), {})[field] = tensor
    return states


def write_training_checkpoint(
    path: str | Path,
    config: dict[str, Any],
    modules: dict,
    optimizers: dict[str, torch.optim.Optimizer],
    state: dict[str, Any],
) -> Path:
    """Write a complete resumable checkpoint folder atomically (all files or none)."""
    config = {"genpix": __version__, **config}
    validate_config(config, "config")
    opt_tensors, opt_rest = _split_optimizer_state(
        {name: opt.state_dict() for name, opt in optimizers.items()}
    )
    with atomic_directory(path) as tmp:
        save_file(flatten_weights(modules), tmp / WEIGHTS_NAME)
        save_file(opt_tensors, tmp / OPTIMIZER_NAME)
        (tmp / STATE_NAME).write_text(json.dumps({**state, "optimizers": opt_rest}, indent=2))
        (tmp / CONFIG_NAME).write_text(json.dumps(config, indent=2))
    return Path(path)


@dataclass
class TrainingCheckpoint:
    model: ModelDir
    optimizers: dict[str, dict]  # name -> optimizer state_dict
    state: dict[str, Any]  # step and whatever the trainer stored


def read_training_checkpoint(path: str | Path) -> TrainingCheckpoint:
    path = Path(path)
    model = read_model_dir(path)
    state = read_json_object(path / STATE_NAME)
    tensors = _read_safetensors(path / OPTIMIZER_NAME)
    try:
        optimizers = _join_optimizer_state(tensors, state.pop("optimizers"))
        int(state["step"])
    except (KeyError, ValueError, TypeError) as error:
        raise CheckpointError(f"{path / STATE_NAME} is incomplete ({error})") from None
    return TrainingCheckpoint(model, optimizers, state)


def check_state_dict(own: dict[str, torch.Tensor], state: dict[str, torch.Tensor], where: str,
                     error: type[Exception] = CheckpointError) -> None:
    """Raise ``error`` naming the first key of ``state`` that ``own`` (a module's state_dict) lacks,
    the first it has that ``state`` lacks, or the first tensor of another shape."""
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        kind, key = ("missing", missing[0]) if missing else ("unexpected", unexpected[0])
        raise error(f"{where}: {kind} weight {key!r} ({len(missing)} missing, {len(unexpected)} unexpected)")
    for key, tensor in state.items():
        if own[key].shape != tensor.shape:
            raise error(f"{where}: weight {key!r} has shape {tuple(tensor.shape)}, "
                        f"the model expects {tuple(own[key].shape)}")


def check_optimizer_state(optimizer: torch.optim.Optimizer, state: dict[str, Any], where: str) -> None:
    """Raise CheckpointError unless ``state`` (an optimizer state_dict) fits ``optimizer``: the same
    parameter groups, with the same number of parameters, and state tensors of the parameters' shapes."""
    groups = state.get("param_groups") if isinstance(state, dict) else None
    if not isinstance(groups, list) or len(groups) != len(optimizer.param_groups):
        raise CheckpointError(f"{where}: optimizer state has {len(groups or [])} parameter groups, "
                              f"the optimizer {len(optimizer.param_groups)}")
    params = [p for group in optimizer.param_groups for p in group["params"]]
    sizes = [len(g.get("params", [])) if isinstance(g, dict) else -1 for g in groups]
    if sizes != [len(g["params"]) for g in optimizer.param_groups]:
        raise CheckpointError(f"{where}: optimizer state groups hold {sizes} parameters, the optimizer "
                              f"{[len(g['params']) for g in optimizer.param_groups]}")
    for index, values in (state.get("state") or {}).items():
        if not isinstance(index, int) or not 0 <= index < len(params):
            raise CheckpointError(f"{where}: optimizer state for unknown parameter {index!r}")
        for key, value in values.items():
            if torch.is_tensor(value) and value.dim() > 0 and value.shape != params[index].shape:
                raise CheckpointError(f"{where}: optimizer state {key!r} of parameter {index} has shape "
                                      f"{tuple(value.shape)}, the parameter {tuple(params[index].shape)}")


def load_module_weights(module: torch.nn.Module, state: dict[str, torch.Tensor], where: str) -> None:
    """Strictly load ``state`` into ``module``; a mismatch names the first offending key."""
    check_state_dict(module.state_dict(), state, where)
    module.load_state_dict(state)
