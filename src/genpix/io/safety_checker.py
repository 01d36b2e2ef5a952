"""Reading the Stable Diffusion safety checker (models/safety_checker.py) from a diffusers folder:
``safety_checker/`` (transformers' ``CLIPConfig`` config.json, model.safetensors or pytorch_model.bin)
and ``feature_extractor/`` (``CLIPImageProcessor``'s preprocessor_config.json)."""

from __future__ import annotations

from pathlib import Path

import torch

from genpix.io.checkpoint import check_state_dict, read_json_object
from genpix.io.mapped_pages import float32_state
from genpix.io.sd_checkpoint import read_state_dict
from genpix.io.sd_common import materialised
from genpix.models.safety_checker import ImagePreprocessing, SafetyChecker, SafetyCheckerConfig, SafetyCheckerError

WEIGHT_NAMES = ("model.safetensors", "pytorch_model.bin")


def load_transformers_state_dict(model: SafetyChecker, state: dict[str, torch.Tensor], where: str,
                                 source: Path | None = None) -> None:
    """diffusers' ``StableDiffusionSafetyChecker`` weights assigned into ``model`` (which may be on the
    meta device) in float32: transformers 5 names (``vision_model.embeddings...``) or 4's
    (``vision_model.vision_model.embeddings...``); ``source``: the file they are mapped from."""
    state = {k.replace("vision_model.vision_model.", "vision_model.", 1): v for k, v in state.items()
             if not k.endswith("position_ids")}
    check_state_dict(model.state_dict(), state, where, SafetyCheckerError)
    model.load_state_dict(float32_state(state, source), assign=True)


def load_safety_checker(checker: str | Path, feature_extractor: str | Path) -> SafetyChecker:
    """The safety checker of a diffusers model's ``safety_checker/`` and ``feature_extractor/`` folders,
    in eval mode without gradients."""
    checker, feature_extractor = Path(checker), Path(feature_extractor)
    extractor_file = feature_extractor / "preprocessor_config.json"
    if not extractor_file.is_file():
        raise SafetyCheckerError(f"the safety checker needs {extractor_file} (its image preprocessing)")
    config = SafetyCheckerConfig.from_transformers(read_json_object(checker / "config.json", SafetyCheckerError))
    preprocessing = ImagePreprocessing.from_transformers(read_json_object(extractor_file, SafetyCheckerError))
    weights = next((checker / n for n in WEIGHT_NAMES if (checker / n).is_file()), None)
    if weights is None:
        raise SafetyCheckerError(f"no model.safetensors (or pytorch_model.bin) in {checker}")
    with torch.device("meta"):  # no random initialisation: every parameter is assigned
        model = SafetyChecker(config, preprocessing)
    load_transformers_state_dict(model, read_state_dict(weights), str(checker), weights)
    return materialised(model.eval().requires_grad_(False), str(checker))
