"""genpix: train VAEs, GANs and diffusion models on your own images, and generate with them."""

from genpix.version import __version__


def load_pipeline(path_or_name: str, device: str = "cpu", **options):
    """Load any model genpix can run (a model directory, a bundled model's name, a Stable Diffusion
    .safetensors/.ckpt file or diffusers folder) as a pipeline. Stable Diffusion takes ``options``
    tokenizer=DIR, vae=FILE, prediction="eps"|"v"; text-to-image models (Stable Diffusion, ldm) take
    blocklist=FILE (extra prompt-blocklist terms) and safety_checker=False (no safety checks).

    Returns a pipeline whose ``__call__`` returns an object with ``images`` (list of PIL images)
    and ``info`` (the generation parameters).
    """
    from genpix.pipelines import load_pipeline as _load

    return _load(path_or_name, device=device, **options)


__all__ = ["__version__", "load_pipeline"]
