"""The starting noise of a batch with sd-webui's variation seeds, and the generators that feed the
ancestral samplers' noise afterwards (sd-webui modules/rng.py ``ImageRNG``, formerly
``create_random_tensors`` in modules/processing.py), for its ``randn_source = "CPU"`` (the
default here: every draw from a CPU ``torch.Generator``, so the same seeds give the same tensor
on any machine) or "GPU" (``device="cuda"``: generators on the GPU, as sd-webui draws there).

Per image i with seed s_i (its noise tensor (C, H, W)):

    noise   = randn(s_i, shape_from)                     shape_from = (C, from_h // f, from_w // f)
    noise   = slerp(subseed_strength, noise, randn(subseed_i, shape_from))    if subseed_strength != 0
    x       = randn(s_i, shape); x[centre] = noise[centre]                    if shape_from != shape

where ``randn(seed, shape)`` is the first draw of a generator seeded with ``seed``, f the latent
downsampling factor (8 for Stable Diffusion), and the centre crop/paste keeps the composition of
the picture a seed gave at the other size. The image's generator has then drawn one tensor of
``shape``; the samplers' later noise continues from it, or, with ``eta_noise_seed_delta`` (ENSD),
from a fresh generator seeded ``s_i + ENSD``.

:func:`image_seeds` expands a request's seed and subseed into per-image lists as sd-webui does:
with a variation strength every image keeps the seed and the subseed counts up.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from genpix.errors import GenpixError

SEED_RANGE = (-(2**63), 2**64)  # what torch.Generator.manual_seed accepts


@dataclass(frozen=True)
class VariationNoise:
    """sd-webui's noise options for one batch (defaults: plain per-image seeds)."""

    seeds: tuple[int, ...]  # one per image
    subseeds: tuple[int, ...] = ()  # variation seeds, one per image (missing ones are 0, as in sd-webui)
    subseed_strength: float = 0.0  # 0: the seed's noise, 1: the subseed's noise (slerp between)
    seed_resize_from_h: int = 0  # > 0 with _w: take the seed's noise as drawn at this image size
    seed_resize_from_w: int = 0
    eta_noise_seed_delta: int = 0  # ENSD: the samplers' noise comes from seed + ENSD
    factor: int = 8  # latent downsampling factor (pixels per latent cell)
    device: str = "cpu"  # where the generators draw: sd-webui's randn_source CPU, or GPU as "cuda"

    def __post_init__(self) -> None:
        if not self.seeds:
            raise GenpixError("variation noise needs at least one seed")
        for seed in (*self.seeds, *self.subseeds):
            _check_seed(seed)
        _check_seed(self.eta_noise_seed_delta, "eta_noise_seed_delta")
        if not 0.0 <= self.subseed_strength <= 1.0:
            raise GenpixError(f"subseed_strength must be between 0 and 1, got {self.subseed_strength}")
        if self.factor < 1:
            raise GenpixError(f"the latent factor must be at least 1, got {self.factor}")

    @property
    def resized(self) -> bool:
        return self.seed_resize_from_h > 0 and self.seed_resize_from_w > 0


def _check_seed(seed: int, what: str = "seed") -> None:
    if isinstance(seed, bool) or not isinstance(seed, int) or not SEED_RANGE[0] <= seed < SEED_RANGE[1]:
        raise GenpixError(f"{what} must be a whole number in [-2**63, 2**64), got {seed!r}")


def create_generator(seed: int, device: str = "cpu") -> torch.Generator:
    """sd-webui's ``create_generator``: randn_source CPU on the CPU, GPU on the model's device."""
    return torch.Generator(device).manual_seed(int(seed))


def randn(seed: int, shape: Sequence[int], device: str = "cpu") -> torch.Tensor:
    """The first N(0, I) tensor of ``shape`` a generator seeded with ``seed`` draws (float32)."""
    generator = create_generator(seed, device)
    return torch.randn(tuple(shape), generator=generator, device=generator.device)


def slerp(val: float, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """sd-webui's ``slerp`` exactly (modules/rng.py): spherical interpolation with the vectors
    taken along dim 1 of (C, H, W) tensors, i.e. one angle per (channel, column); when the mean
    cosine exceeds 0.9995 it falls back to ``low * val + high * (1 - val)``, weights as written
    there (reversed against the spherical branch)."""
    low_norm = low / torch.norm(low, dim=1, keepdim=True)
    high_norm = high / torch.norm(high, dim=1, keepdim=True)
    dot = (low_norm * high_norm).sum(1)
    if dot.mean() > 0.9995:
        return low * val + high * (1 - val)
    omega = torch.acos(dot)
    so = torch.sin(omega)
    return (torch.sin((1.0 - val) * omega) / so).unsqueeze(1) * low + (torch.sin(val * omega) / so).unsqueeze(1) * high


def paste_centre(x: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """``noise`` (C, h, w) centred on ``x`` (C, H, W): cropped where larger, pasted where smaller
    (sd-webui's seed-resize block, offsets rounded down as there)."""
    dx = (x.shape[2] - noise.shape[2]) // 2
    dy = (x.shape[1] - noise.shape[1]) // 2
    w = noise.shape[2] if dx >= 0 else noise.shape[2] + 2 * dx
    h = noise.shape[1] if dy >= 0 else noise.shape[1] + 2 * dy
    tx, ty = max(dx, 0), max(dy, 0)
    dx, dy = max(-dx, 0), max(-dy, 0)
    x[:, ty:ty + h, tx:tx + w] = noise[:, dy:dy + h, dx:dx + w]
    return x


def variation_noise(options: VariationNoise, shape: Sequence[int]) -> tuple[torch.Tensor, list[torch.Generator]]:
    """(noise (B, C, H, W) float32 on ``options.device``, one generator per image for the sampler's
    later noise) for latents of ``shape`` (C, H, W); B = len(options.seeds)."""
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3:
        raise GenpixError(f"the latent shape must be (C, H, W), got {shape}")
    from_shape = shape
    if options.resized:
        from_shape = (shape[0], options.seed_resize_from_h // options.factor,
                      options.seed_resize_from_w // options.factor)
        if min(from_shape[1:]) < 1:
            raise GenpixError(f"seed resize from {options.seed_resize_from_w}x{options.seed_resize_from_h} "
                              f"is smaller than one latent cell ({options.factor} px)")
    device = options.device
    generators = [create_generator(seed, device) for seed in options.seeds]
    xs = []
    for i, (seed, generator) in enumerate(zip(options.seeds, generators)):
        if from_shape == shape:
            noise = torch.randn(shape, generator=generator, device=generator.device)
        else:
            noise = randn(seed, from_shape, device)
        if options.subseed_strength != 0:
            subseed = options.subseeds[i] if i < len(options.subseeds) else 0
            noise = slerp(options.subseed_strength, noise, randn(subseed, from_shape, device))
        if from_shape != shape:  # the full-size draw advances the image's generator, as in sd-webui
            noise = paste_centre(torch.randn(shape, generator=generator, device=generator.device), noise)
        xs.append(noise)
    if options.eta_noise_seed_delta:
        generators = [create_generator(seed + options.eta_noise_seed_delta, device) for seed in options.seeds]
    return torch.stack(xs), generators


def image_seeds(seed: int, subseed: int, subseed_strength: float, count: int) -> tuple[list[int], list[int]]:
    """Per-image (seeds, subseeds) of a request for ``count`` images (sd-webui process_images):
    seeds count up from ``seed`` unless a variation strength is set, when all share it;
    subseeds always count up from ``subseed``. Resolve -1 (random) before calling."""
    if count < 1:
        raise GenpixError(f"the image count must be at least 1, got {count}")
    seeds = [int(seed) + (i if subseed_strength == 0 else 0) for i in range(count)]
    return seeds, [int(subseed) + i for i in range(count)]


def infotext_fields(subseed: int, subseed_strength: float, seed_resize_from_w: int, seed_resize_from_h: int,
                    eta_noise_seed_delta: int = 0, sampler_adds_noise: bool = False) -> dict[str, object]:
    """The infotext entries sd-webui writes for these options (processing.create_infotext; ENSD
    only for samplers that draw noise after the start, sd-webui's ``uses_ensd``), in its order."""
    fields: dict[str, object] = {}
    if subseed_strength != 0:
        fields["Variation seed"] = subseed
        fields["Variation seed strength"] = subseed_strength
    if seed_resize_from_w > 0 and seed_resize_from_h > 0:
        fields["Seed resize from"] = f"{seed_resize_from_w}x{seed_resize_from_h}"
    if eta_noise_seed_delta and sampler_adds_noise:
        fields["ENSD"] = eta_noise_seed_delta
    return fields
