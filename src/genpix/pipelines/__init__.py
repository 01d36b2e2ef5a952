"""Pipelines compose loaded components into generation calls.

One registry of the families a pipeline can be loaded for (:data:`FAMILIES`): each names its loader
and the loading options it takes, so ``load_pipeline`` has no family chain and an option a family
does not take is a one-line error naming it. Stable Diffusion files and folders are recognised by
io/sd_loader.py; genpix model folders by the ``family`` in their config.json.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

import torch

from genpix.errors import GenpixError
from genpix.io.checkpoint import read_model_dir
from genpix.pipelines.models import resolve_model


@dataclass(frozen=True)
class FamilyLoader:
    name: str
    loader: str  # "module:function", imported on first use (loading torch models is the slow part)
    options: frozenset[str] = frozenset()  # load_pipeline keyword options it takes
    refusal: str | None = None  # why models of this family do not generate on their own

    def load(self, target, device, options: dict):
        unknown = sorted(set(options) - self.options)
        if unknown:
            takes = ", ".join(sorted(self.options)) or "none"
            raise GenpixError(f"{getattr(target, 'path', target)}: a {self.name} model takes no {', '.join(unknown)} (its loading options: "
                              f"{takes})")
        module, function = self.loader.split(":")
        return getattr(importlib.import_module(module), function)(target, device, **options)


_SAFETY = frozenset({"safety_checker", "blocklist"})
# the sd family's options: the fields of pipelines/text_to_image.py's SDLoading (kept in step by a test)
SD_OPTIONS = frozenset({"tokenizer", "tokenizer_2", "vae", "prediction", "download_tokenizer", "safety_checker",
                        "blocklist", "half", "lora_dir", "embeddings_dir", "loras", "preview_decoder",
                        "noise_schedule"})
FAMILIES: dict[str, FamilyLoader] = {f.name: f for f in (
    FamilyLoader("sd", "genpix.pipelines.text_to_image:load_sd_pipeline", SD_OPTIONS),
    FamilyLoader("ldm", "genpix.pipelines.ldm:load_ldm_pipeline", _SAFETY),
    FamilyLoader("ddpm", "genpix.pipelines.diffusion:load_diffusion_pipeline"),
    FamilyLoader("vae", "genpix.pipelines.models:load_vae_pipeline"),
    FamilyLoader("gan", "genpix.pipelines.models:load_gan_pipeline"),
    FamilyLoader("autoencoder", "", refusal="an autoencoder does not generate on its own; train latent diffusion "
                                            "on it: genpix train ldm --data ... --autoencoder {path}"),
)}


def family_of(path_or_name: str) -> FamilyLoader:
    """The registry entry of the model at ``path_or_name`` (a one-line error for an unknown family)."""
    from genpix.io.sd_loader import is_sd_model

    if is_sd_model(path_or_name):
        return FAMILIES["sd"]
    model_dir = read_model_dir(resolve_model(path_or_name))
    family = FAMILIES.get(model_dir.family)
    if family is None:
        raise GenpixError(f"{model_dir.path}: sampling {model_dir.family!r} models is not supported "
                          f"(genpix runs: {', '.join(f for f, e in FAMILIES.items() if e.refusal is None)})")
    return family


def load_pipeline(path_or_name: str, device: str | torch.device = "cpu", **options):
    """Load a model folder, a bundled model's name, or a Stable Diffusion file or diffusers folder
    as a pipeline (see genpix.load_pipeline); ``options`` as the family's entry in :data:`FAMILIES`
    lists them, and ``upscalers_dir`` (the hires fix's upscaler files) for every diffusion model."""
    upscalers_dir = options.pop("upscalers_dir", None)
    family = family_of(path_or_name)
    if family.name == "sd":
        pipe = family.load(path_or_name, device, options)
    else:
        model_dir = read_model_dir(resolve_model(path_or_name))
        if family.refusal:
            raise GenpixError(f"{model_dir.path}: {family.refusal.format(path=model_dir.path)}")
        pipe = family.load(model_dir, device, options)
    if upscalers_dir is not None:
        if not hasattr(pipe, "upscalers_dir"):
            raise GenpixError(f"{path_or_name}: upscalers_dir is for diffusion models (the hires fix)")
        pipe.upscalers_dir = str(upscalers_dir)
    return pipe
