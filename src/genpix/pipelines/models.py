"""Finding and loading a MODEL argument: a model folder or a bundled model's name."""

from __future__ import annotations

import torch

from genpix.config import from_dict
from genpix.errors import GenpixError
from genpix.io.bundled import bundled_models, resolve_model  # noqa: F401 (imported from here by the CLI, server and eval)
from genpix.io.checkpoint import CheckpointError, ModelDir, load_module_weights, read_model_dir
from genpix.models.gan import GANConfig, Generator
from genpix.models.vae import VAE, VAEConfig
from genpix.pipelines.latent_decoder import LatentDecoderPipeline


DEFAULT_TEXT_MODEL = "emoji-ldm"  # the bundled text-to-image model every prompt command and the server start with


def build_network(model_dir: ModelDir, role: str, config_cls, network_cls) -> torch.nn.Module:
    """Rebuild a network from config.json and load its weights strictly."""
    config = from_dict(config_cls, model_dir.config["model"], where=f"{model_dir.path}/config.json model")
    network = network_cls(config)
    if role not in model_dir.weights:
        raise CheckpointError(f"{model_dir.path}/model.safetensors has no {role!r} weights")
    load_module_weights(network, model_dir.weights[role], f"{model_dir.path}/model.safetensors")
    return network.eval()


def load_vae(model_dir: ModelDir) -> VAE:
    return build_network(model_dir, "vae", VAEConfig, VAE)


def load_generator(model_dir: ModelDir) -> Generator:
    return build_network(model_dir, "generator", GANConfig, Generator)


def _shape(config) -> tuple[int, int, int]:
    return config.channels, config.image_size, config.image_size


def load_vae_pipeline(model_dir: ModelDir, device: str | torch.device = "cpu") -> LatentDecoderPipeline:
    """A VAE's decoder (with its encoder, for latent walks and grids) as a LatentDecoderPipeline."""
    vae = load_vae(model_dir).to(device)
    return LatentDecoderPipeline(vae.decode, vae.config.latent_dim, model_name=model_dir.path.name, family="vae",
                                 image_shape=_shape(vae.config), device=device, encode=lambda x: vae.encode(x)[0])


def load_gan_pipeline(model_dir: ModelDir, device: str | torch.device = "cpu") -> LatentDecoderPipeline:
    """A GAN's generator (tanh output in [-1, 1]) as a LatentDecoderPipeline."""
    generator = load_generator(model_dir).to(device)
    config = generator.config
    class_names = None
    if config.conditional:
        class_names = tuple(model_dir.config.get("data", {}).get("class_names") or ())
        if len(class_names) != config.num_classes:
            raise CheckpointError(f"{model_dir.path}/config.json: a class-conditional model needs "
                                  f"{config.num_classes} names in data.class_names")
    return LatentDecoderPipeline(generator, config.latent_dim, model_name=model_dir.path.name, family="gan",
                                 image_shape=_shape(config), device=device, value_range=(-1.0, 1.0),
                                 class_names=class_names)


LATENT_LOADERS = {"vae": load_vae_pipeline, "gan": load_gan_pipeline}


def load_latent_decoder(model_dir: ModelDir, device: str | torch.device = "cpu") -> LatentDecoderPipeline:
    """A VAE or GAN model folder as a LatentDecoderPipeline (the latent-grid and walk commands)."""
    if model_dir.family not in LATENT_LOADERS:
        raise GenpixError(f"{model_dir.path}: a {model_dir.family} model does not decode a latent z "
                          f"(this needs one of: {', '.join(LATENT_LOADERS)})")
    return LATENT_LOADERS[model_dir.family](model_dir, device)
