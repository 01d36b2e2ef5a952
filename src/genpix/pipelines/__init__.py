"""Pipelines compose loaded components into generation calls."""

from __future__ import annotations

import torch

from genpix.errors import GenpixError
from genpix.io.checkpoint import read_model_dir
from genpix.pipelines.models import LATENT_FAMILIES, load_latent_decoder, resolve_model

SAFETY_OPTIONS = frozenset({"safety_checker", "blocklist"})  # text-to-image models' (pipelines/safety.py)


def load_pipeline(path_or_name: str, device: str | torch.device = "cpu", **options):
    """Load a model folder or a bundled model's name as a pipeline (see genpix.load_pipeline).

    Stable Diffusion (a .safetensors/.ckpt file or a diffusers folder with model_index.json) takes
    ``options``: tokenizer=DIR, vae=FILE, prediction="eps"|"v" (pipelines/text_to_image.py). Every
    text-to-image model (Stable Diffusion, ldm) takes blocklist=FILE (extra terms for the prompt
    blocklist) and safety_checker=False (no safety checks at all; pipelines/safety.py)."""
    from genpix.io.sd_loader import is_sd_model

    if is_sd_model(path_or_name):
        from genpix.pipelines.text_to_image import load_sd_pipeline

        return load_sd_pipeline(path_or_name, device, **options)
    if set(options) - SAFETY_OPTIONS:
        raise GenpixError(f"{path_or_name}: {', '.join(sorted(set(options) - SAFETY_OPTIONS))} apply to Stable "
                          f"Diffusion models only")
    model_dir = read_model_dir(resolve_model(path_or_name))
    if model_dir.family == "ldm":
        from genpix.pipelines.ldm import load_ldm_pipeline

        return load_ldm_pipeline(model_dir, device, **options)
    if options:
        raise GenpixError(f"{path_or_name}: {', '.join(sorted(options))} apply to text-to-image models only "
                          f"(Stable Diffusion, ldm)")
    if model_dir.family in LATENT_FAMILIES:
        return load_latent_decoder(model_dir, device)
    if model_dir.family == "ddpm":
        from genpix.pipelines.diffusion import load_diffusion_pipeline

        return load_diffusion_pipeline(model_dir, device)
    if model_dir.family == "autoencoder":
        raise GenpixError(f"{model_dir.path}: an autoencoder does not generate on its own; train latent diffusion "
                          f"on it: genpix train ldm --data ... --autoencoder {model_dir.path}")
    raise GenpixError(f"{model_dir.path}: sampling {model_dir.family!r} models is not supported yet")
