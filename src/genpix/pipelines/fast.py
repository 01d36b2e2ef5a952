"""Less work per picture, switched on per request (every switch off by default: the exact path).

- ``deepcache_interval`` N > 0: DeepCache (Ma et al. 2023, models/deepcache.py) around the U-Net,
  a full pass every N network calls, the shallow branch on the others (1: every call full, the
  same pictures); 0: off. ``deepcache_block`` K > 0: the skip branch leaves the finest level after
  its K-th down layer (1: the paper's shallowest branch, 0.22 of a full call's FLOPs for SD 1.5
  at 512x512); 0: after its last (the whole level, 0.38).
- ``token_merging_ratio`` r > 0: ToMe for SD (Bolya and Hoffman 2023, models/tome.py) in the
  cross-attention U-Net's self-attention at the finest attention level; sd-webui's option name.
- ``tiny_decode``: the final pictures decoded by the model's tiny preview decoder (TAESD,
  pipelines/preview.py) instead of its full autoencoder.

Each switch applies to one sampling call: the DeepCache wrapper is made per chunk (its cache is its
own) and token merging is a context variable set around the sampler, so the shared modules never
change and concurrent requests never see each other's state.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import replace

from genpix.errors import GenpixError
from genpix.models.deepcache import DeepCache, DeepCacheConfig
from genpix.models.sd_unet import SDUNet
from genpix.models.tome import TokenMergingConfig, merging
from genpix.models.unet import UNet
from genpix.pipelines.parts import LatentUNet, Parts


def _cacheable(network) -> bool:
    """Whether DeepCache can wrap a denoiser's network: one of genpix's U-Nets, or one behind LatentUNet."""
    unet = network.unet if isinstance(network, LatentUNet) else network
    return isinstance(unet, (SDUNet, UNet))


def deepcache_network(network, config: DeepCacheConfig):
    """The denoiser's network with a fresh DeepCache around its U-Net."""
    if not _cacheable(network):
        raise GenpixError(f"deepcache_interval needs one of genpix's U-Nets; this model's network is "
                          f"{type(network).__name__}")
    if isinstance(network, LatentUNet):
        return LatentUNet(DeepCache(network.unet, config), network.dtype)
    return DeepCache(network, config)


def _token_merging(parts: Parts, ratio: float, latent_size: tuple[int, int]):
    """The merging context for this request (off: a null context). The finest level with attention
    is merged: SDXL's U-Net has none at full resolution, so its half-resolution blocks are."""
    if not ratio:
        return nullcontext()
    unet = getattr(parts.denoiser.network, "unet", parts.denoiser.network)
    if not isinstance(unet, SDUNet):
        raise GenpixError("token_merging_ratio needs a cross-attention U-Net (Stable Diffusion, genpix's latent "
                          "text models)")
    finest = next((i for i, kind in enumerate(unet.config.down_block_types) if kind.startswith("CrossAttn")), 0)
    return merging(TokenMergingConfig(ratio, max_downsample=2 ** finest), latent_size)


def _deepcache_config(request) -> DeepCacheConfig | None:
    """The request's DeepCache (None: off; interval 1: every call full, the exact path through the wrapper)."""
    if request.deepcache_interval < 0 or request.deepcache_block < 0:
        raise GenpixError(f"deepcache_interval and deepcache_block must be 0 (off) or more, got "
                          f"{request.deepcache_interval} and {request.deepcache_block}")
    if request.deepcache_block and not request.deepcache_interval:
        raise GenpixError("deepcache_block needs deepcache_interval (DeepCache is off)")
    if not request.deepcache_interval:
        return None
    return DeepCacheConfig(request.deepcache_interval, block=request.deepcache_block or None)


@contextmanager
def less_work(parts: Parts, request, latent_size: tuple[int, int]) -> Iterator[Parts]:
    """The parts to sample one chunk of ``request`` with (latents of ``latent_size`` (h, w)): the
    denoiser's network behind a fresh DeepCache, and token merging on while inside."""
    merging_context = _token_merging(parts, request.token_merging_ratio, latent_size)
    deepcache = _deepcache_config(request)
    if deepcache is not None:
        denoiser = copy.copy(parts.denoiser)  # the shared denoiser keeps its own network
        denoiser.network = deepcache_network(denoiser.network, deepcache)
        parts = replace(parts, denoiser=denoiser)
    with merging_context:
        yield parts


def final_decoder(parts: Parts, request):
    """What decodes the sampled latents: the full autoencoder, or the tiny decoder with ``tiny_decode``."""
    if not request.tiny_decode:
        return parts.space
    if parts.space.factor == 1:
        raise GenpixError("tiny_decode is for latent models; a pixel model's samples are already pictures")
    if parts.preview is None:
        raise GenpixError("tiny_decode needs the model's tiny decoder: the bundled latent models keep one beside "
                          "their weights; for a Stable Diffusion checkpoint load a TAESD decoder file with "
                          "preview_decoder=FILE (genpix generate --preview-decoder FILE)")
    return parts.preview


def unsupported_switches(parts: Parts) -> tuple[str, ...]:
    """The request fields of the switches these parts cannot honour (each an error in :func:`less_work`
    or :func:`final_decoder`): what a caller applying one setting to every model (the HTTP server)
    drops and names as ignored instead."""
    names = [] if _cacheable(parts.denoiser.network) else ["deepcache_interval", "deepcache_block"]
    if not isinstance(getattr(parts.denoiser.network, "unet", parts.denoiser.network), SDUNet):
        names.append("token_merging_ratio")
    if parts.space.factor == 1 or parts.preview is None:
        names.append("tiny_decode")
    return tuple(names)


# genpix generate --fast: few steps and every switch that keeps the picture close. Few-step
# checkpoints and LoRAs, recognised by "lcm" / "turbo" / "lightning" in the model's or a <lora:>
# tag's name, get their own sampler and CFG 1 (one pass per step, the unconditional batch skipped)
# and no DeepCache (each of their 4 steps changes the picture too much to reuse).
FAST_DEFAULT = {"steps": 15, "sampler": "DPM++ 2M", "schedule": "Karras", "deepcache_interval": 2,
                "token_merging_ratio": 0.5}
FAST_FEW_STEP = {
    "lcm": {"steps": 4, "sampler": "LCM", "cfg_scale": 1.0},  # Luo et al. 2023: 2-8 steps, CFG 1-2
    "turbo": {"steps": 4, "sampler": "Euler a", "cfg_scale": 1.0},  # SD-Turbo / SDXL-Turbo: 1-4 steps, no CFG
    "lightning": {"steps": 4, "sampler": "Euler", "schedule": "SGM Uniform", "cfg_scale": 1.0},  # SDXL-Lightning
}


def fast_preset(pipe, prompt: str = "") -> dict:
    """The request fields of ``--fast`` for a loaded pipeline (its model name and the prompt's
    <lora:> tags pick a few-step preset); a field the caller sets wins over these."""
    names = (pipe.model_name + " " + " ".join(re.findall(r"<lora:([^:>]+)", prompt))).lower()
    few = next((preset for key, preset in FAST_FEW_STEP.items() if key in names), None)
    fields = dict(few) if few is not None else dict(FAST_DEFAULT)
    unet = getattr(pipe.parts.denoiser.network, "unet", pipe.parts.denoiser.network)
    if not isinstance(unet, SDUNet):
        fields.pop("token_merging_ratio", None)  # the pixel U-Net has no transformer blocks
    if pipe.parts.preview is not None:
        fields["tiny_decode"] = True
    return fields
