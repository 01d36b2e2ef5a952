"""Variation noise against sd-webui's algorithm, written here from its source (modules/rng.py
ImageRNG.first/next and slerp, randn_source "CPU"; processing.py's seed lists), using the global
torch RNG as sd-webui does."""

import pytest
import torch

from genpix.diffusion.noise import VariationNoise, image_seeds, variation_noise
from genpix.diffusion.sampler_steps import randn_like
from genpix.errors import GenpixError


def webui_slerp(val, low, high):
    low_norm = low / torch.norm(low, dim=1, keepdim=True)
    high_norm = high / torch.norm(high, dim=1, keepdim=True)
    dot = (low_norm * high_norm).sum(1)
    if dot.mean() > 0.9995:
        return low * val + high * (1 - val)
    omega = torch.acos(dot)
    so = torch.sin(omega)
    return (torch.sin((1.0 - val) * omega) / so).unsqueeze(1) * low + (torch.sin(val * omega) / so).unsqueeze(1) * high


def webui_randn(seed, shape, generator=None):
    torch.manual_seed(seed)
    return torch.randn(shape, device="cpu", generator=generator)


class WebuiImageRNG:
    def __init__(self, shape, seeds, subseeds, subseed_strength, from_h, from_w, ensd):
        self.shape, self.seeds, self.subseeds = shape, seeds, subseeds
        self.subseed_strength, self.from_h, self.from_w, self.ensd = subseed_strength, from_h, from_w, ensd
        self.generators = [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]

    def first(self):
        noise_shape = self.shape if self.from_h <= 0 or self.from_w <= 0 else (
            self.shape[0], self.from_h // 8, self.from_w // 8)
        xs = []
        for i, (seed, generator) in enumerate(zip(self.seeds, self.generators)):
            subnoise = None
            if self.subseeds is not None and self.subseed_strength != 0:
                subseed = 0 if i >= len(self.subseeds) else self.subseeds[i]
                subnoise = webui_randn(subseed, noise_shape)
            if noise_shape != self.shape:
                noise = webui_randn(seed, noise_shape)
            else:
                noise = webui_randn(seed, self.shape, generator=generator)
            if subnoise is not None:
                noise = webui_slerp(self.subseed_strength, noise, subnoise)
            if noise_shape != self.shape:
                x = webui_randn(seed, self.shape, generator=generator)
                dx = (self.shape[2] - noise_shape[2]) // 2
                dy = (self.shape[1] - noise_shape[1]) // 2
                w = noise_shape[2] if dx >= 0 else noise_shape[2] + 2 * dx
                h = noise_shape[1] if dy >= 0 else noise_shape[1] + 2 * dy
                tx = 0 if dx < 0 else dx
                ty = 0 if dy < 0 else dy
                dx = max(-dx, 0)
                dy = max(-dy, 0)
                x[:, ty:ty + h, tx:tx + w] = noise[:, dy:dy + h, dx:dx + w]
                noise = x
            xs.append(noise)
        if self.ensd:
            self.generators = [torch.Generator("cpu").manual_seed(int(s) + self.ensd) for s in self.seeds]
        return torch.stack(xs)

    def next(self):
        return torch.stack([torch.randn(self.shape, generator=g) for g in self.generators])


CASES = [
    # seeds, subseeds, strength, from_h, from_w, ensd, shape
    ((965400086,), (1,), 0.0, 0, 0, 0, (4, 8, 8)),
    ((123, 124), (7, 8), 0.3, 0, 0, 0, (4, 8, 8)),
    ((5, 5, 5), (99,), 0.75, 0, 0, 31337, (4, 6, 10)),
    ((42,), (43,), 1.0, 0, 0, 0, (4, 8, 8)),
    ((42, 43), (3, 4), 0.5, 96, 48, 0, (4, 8, 8)),  # resize from 48x96: crop in H, paste in W
    ((11,), (), 0.2, 32, 128, 31337, (4, 8, 8)),  # paste in H, crop in W; missing subseed is 0
]


@pytest.mark.parametrize("seeds, subseeds, strength, from_h, from_w, ensd, shape", CASES)
def test_noise_and_sampler_noise_equal_sd_webui(seeds, subseeds, strength, from_h, from_w, ensd, shape):
    with torch.random.fork_rng():
        ref = WebuiImageRNG(shape, list(seeds), list(subseeds), strength, from_h, from_w, ensd)
        expected_first, expected_next = ref.first(), [ref.next() for _ in range(2)]
    options = VariationNoise(seeds, subseeds, strength, from_h, from_w, ensd)
    noise, generators = variation_noise(options, shape)
    assert noise.shape == (len(seeds), *shape)
    assert torch.equal(noise, expected_first)
    for expected in expected_next:  # what an ancestral sampler draws through genpix's randn_like
        assert torch.equal(randn_like(noise, generators), expected)


def test_subseed_moves_noise_between_seed_and_subseed():
    plain = variation_noise(VariationNoise((1,)), (4, 8, 8))[0]
    other = variation_noise(VariationNoise((2,)), (4, 8, 8))[0]
    half = variation_noise(VariationNoise((1,), (2,), 0.5), (4, 8, 8))[0]
    full = variation_noise(VariationNoise((1,), (2,), 1.0), (4, 8, 8))[0]
    assert torch.allclose(full, other, atol=1e-5)
    assert not torch.allclose(half, plain) and not torch.allclose(half, other)


def test_seed_resize_keeps_the_centre_of_the_other_size():
    small = variation_noise(VariationNoise((7,)), (4, 6, 6))[0]
    grown = variation_noise(VariationNoise((7,), seed_resize_from_h=48, seed_resize_from_w=48), (4, 8, 8))[0]
    assert torch.equal(grown[:, :, 1:7, 1:7], small)


def test_image_seeds_follow_sd_webui():
    assert image_seeds(10, 20, 0.0, 3) == ([10, 11, 12], [20, 21, 22])
    assert image_seeds(10, 20, 0.4, 3) == ([10, 10, 10], [20, 21, 22])


@pytest.mark.parametrize("kwargs, message", [
    ({"seeds": ()}, "at least one seed"),
    ({"seeds": (1,), "subseed_strength": 1.5}, "subseed_strength"),
    ({"seeds": (2**64,)}, "seed must be"),
    ({"seeds": (1,), "seed_resize_from_h": 4, "seed_resize_from_w": 64}, "smaller than one latent cell"),
])
def test_bad_options_are_one_line_errors(kwargs, message):
    with pytest.raises(GenpixError, match=message):
        variation_noise(VariationNoise(**kwargs), (4, 8, 8))


def test_infotext_fields_as_sd_webui_writes_them():
    from genpix.diffusion.noise import infotext_fields

    assert infotext_fields(7, 0.0, -1, -1) == {}
    assert infotext_fields(7, 0.25, 768, 512, 31337, sampler_adds_noise=True) == {
        "Variation seed": 7, "Variation seed strength": 0.25, "Seed resize from": "768x512", "ENSD": 31337}
    assert "ENSD" not in infotext_fields(7, 0.0, 0, 0, 31337, sampler_adds_noise=False)
