"""Inpainting and outpainting with ordinary diffusion models: the latent mask as a denoiser wrapper
(diffusion/inpainting.py), sd-webui's mask preparation and masked content (pipelines/masking.py), in
the pixel DiffusionPipeline, the Stable Diffusion pipeline (4-channel U-Net) and `genpix inpaint` /
`genpix outpaint`. (The 9-channel SD inpainting path is checked against diffusers in test_sd_pipeline.py.)"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from server_harness import train_tiny_class_model

import genpix
from genpix.diffusion import samplers, schedules
from genpix.diffusion.inpainting import MaskedDenoiser
from genpix.errors import GenpixError
from genpix.io.images import parse_infotext, read_infotext
from genpix.pipelines import masking

SD_SIZE, PROMPT = 32, "a photo of an astronaut riding a horse on the moon"


@pytest.fixture(scope="module")
def ddpm(tmp_path_factory):
    """A tiny class-conditional pixel model: 8x8 grayscale digits, classes "0".."9"."""
    return train_tiny_class_model(tmp_path_factory.mktemp("ddpm"))


@pytest.fixture(scope="module")
def sd_folder(tmp_path_factory):
    """The tiny SD1-like diffusers pipeline of test_sd_pipeline.py (4-channel U-Net), saved."""
    from test_sd_pipeline import tiny_diffusers
    from test_tokenizer import CORPUS, train_bpe

    tmp = tmp_path_factory.mktemp("sd")
    tiny_diffusers(tmp, train_bpe(CORPUS, 60), "sd1").save_pretrained(tmp / "model")
    return tmp / "model"


def as_uint8(tensors: torch.Tensor) -> np.ndarray:
    return (tensors * 255).round().to(torch.uint8).numpy()


def half_mask(size: int, right: bool = True) -> torch.Tensor:
    mask = torch.zeros(1, 1, size, size)
    mask[..., size // 2:] = 1 if right else 0
    mask[..., : size // 2] = 0 if right else 1
    return mask


# --- the denoiser wrapper, on a closed-form denoiser -------------------------------------------------


@pytest.mark.parametrize("sampler", ["Euler", "Euler a", "Heun", "DPM++ 2M", "DPM++ 2M SDE", "DDIM", "LMS", "UniPC"])
def test_masked_denoiser_holds_the_known_region_on_its_noised_path(sampler):
    """Data N(0, 1) has D(x, sigma) = x / (1 + sigma^2). Every call sees x0 + sigma eps outside the
    mask; the result there is x0 exactly (after finish), and only the masked half is generated."""
    generator = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(2, 3, 8, 8, generator=generator), torch.randn(2, 3, 8, 8, generator=generator)
    mask = half_mask(8)
    seen = []

    def toy(x, sigma):
        seen.append((x.clone(), float(sigma)))
        return x / (1 + float(sigma) ** 2)

    masked = MaskedDenoiser(toy, x0, mask, noise)
    sigmas = schedules.sigmas_karras(6, 0.03, 14.6)
    out = samplers.get(sampler)(masked, x0 + noise * sigmas[0], sigmas,
                                generator=[torch.Generator().manual_seed(i) for i in range(2)])
    for x, sigma in seen:
        torch.testing.assert_close(x[..., :4], (x0 + sigma * noise)[..., :4], rtol=0, atol=1e-5)
    final = masked.finish(out, sigmas[-1])
    assert torch.equal(final[..., :4], x0[..., :4]) and torch.equal(final[..., 4:], out[..., 4:])
    assert (final[..., 4:] - x0[..., 4:]).abs().mean() > 0.1
    if sampler in ("Euler", "DPM++ 2M", "DDIM"):  # first-order deterministic steps stay on the path exactly
        torch.testing.assert_close(out[..., :4], x0[..., :4], rtol=0, atol=1e-5)


# --- mask preparation and masked content ---------------------------------------------------------------


def test_mask_preparation_and_fill():
    mask = half_mask(16)
    assert torch.equal(masking.prepare_mask(mask), mask)
    assert torch.equal(masking.prepare_mask(mask, invert=True), 1 - mask)
    blurred = masking.prepare_mask(mask, blur=2)
    assert blurred.min() >= 0 and blurred.max() <= 1
    assert (blurred[..., :8] > 0).any() and (blurred[..., 8:] < 1).any()  # it fades both ways from the edge
    wide = masking.prepare_mask(mask, blur=64)  # wider than the image: blurred on a downsampled copy
    assert wide.shape == mask.shape and 0 < wide.min() and wide.max() < 1
    image = torch.zeros(1, 3, 16, 16)
    image[:, 0, :, :8] = 0.8  # red on the left; the right half is masked and black
    filled = masking.fill_masked(image, mask)
    assert torch.equal(filled[..., :8], image[..., :8])  # known pixels exact
    assert torch.allclose(filled[:, 0, :, 8:], torch.full((16, 8), 0.8), atol=1e-4)  # the hole takes red
    grid = masking.latent_mask(masking.prepare_mask(mask, blur=1), (4, 4))  # any visible repaint counts
    assert torch.equal(grid[0, 0, 0], torch.tensor([0.0, 1, 1, 1]))
    with pytest.raises(GenpixError, match="inpainting fill must be one of 0 fill, 1 original, 2 latent noise, "
                                          "3 latent nothing; got 4"):
        masking.check_inpainting(0, 4)
    with pytest.raises(GenpixError, match="mask blur must be a whole number of pixels from 0 to 64, got 65"):
        masking.check_inpainting(65, 1)


# --- the pixel pipeline ----------------------------------------------------------------------------------


def pixel_init() -> torch.Tensor:
    return torch.randint(0, 256, (1, 1, 8, 8), generator=torch.Generator().manual_seed(3)).float() / 255


@pytest.mark.parametrize("fill", [0, 1, 2, 3])
def test_pixel_pipeline_repaints_only_the_mask(ddpm, fill):
    pipe = genpix.load_pipeline(str(ddpm))
    init = pixel_init()
    out = pipe(n=2, seed=1, steps=8, sampler="Euler a", class_name="4", init_images=init, mask=half_mask(8),
               strength=0.9, inpainting_fill=fill)
    got, want = as_uint8(out.tensors), as_uint8(init)
    assert np.array_equal(got[..., :4], np.broadcast_to(want[..., :4], got[..., :4].shape))
    assert np.abs(got[..., 4:].astype(int) - want[..., 4:]).mean() > 5
    fields = parse_infotext(out.infotexts[0])
    assert (fields["Mask blur"], fields["Masked content"], fields["Denoising strength"], fields["Class"]) == \
        ("0", masking.MASKED_CONTENT[fill], "0.9", "4")


def changed(out: torch.Tensor, init: torch.Tensor) -> np.ndarray:
    """Which pixels (H, W) of the first image differ from the init in 8 bits."""
    return (as_uint8(out)[0] != as_uint8(init)[0]).any(0)


def test_pixel_pipeline_inverted_and_blurred_masks(ddpm):
    pipe = genpix.load_pipeline(str(ddpm))
    init, mask = pixel_init(), torch.zeros(1, 1, 8, 8)
    mask[..., 2:6, 2:6] = 1
    run = dict(n=1, seed=2, steps=8, init_images=init, strength=1.0)
    sharp = changed(pipe(mask=mask, **run).tensors, init)
    assert sharp[2:6, 2:6].any() and not sharp[mask[0, 0] == 0].any()
    inverted = changed(pipe(mask=mask, invert_mask=True, **run).tensors, init)
    assert not inverted[2:6, 2:6].any() and inverted[mask[0, 0] == 0].sum() > 20
    blurred = changed(pipe(mask=mask, mask_blur=1, **run).tensors, init)
    assert blurred[mask[0, 0] == 0].any() and blurred.sum() > sharp.sum()  # the repaint fades outwards
    with pytest.raises(GenpixError, match=r"mask must be \(1 or 1, 1, 8, 8\)"):
        pipe(mask=mask[..., :4], **run)
    with pytest.raises(GenpixError, match=r"a mask needs the image to inpaint"):
        pipe(mask=mask, n=1, steps=2)


# --- Stable Diffusion with a 4-channel U-Net ---------------------------------------------------------------


def smooth_image(height: int = SD_SIZE, width: int = SD_SIZE) -> torch.Tensor:
    image = torch.rand(1, 3, 4, 4, generator=torch.Generator().manual_seed(2))
    image = torch.nn.functional.interpolate(image, size=(height, width), mode="bilinear")
    return torch.from_numpy(as_uint8(image)).float() / 255  # exact in 8 bits


def test_sd_latent_mask_keeps_the_unmasked_pixels(sd_folder):
    """The known half follows the original's latents (decoded, it differs from the original only by
    the autoencoder) and the original is pasted back, so those pixels come back exactly."""
    pipe = genpix.load_pipeline(str(sd_folder))
    init, mask = smooth_image(), half_mask(SD_SIZE)
    run = dict(prompt=PROMPT, steps=3, sampler="Euler a", cfg_scale=7.5, seed=4, init_images=init)
    out = pipe(mask=mask, **run)
    region = changed(out.tensors, init)
    assert not region[:, :16].any() and region[:, 16:].mean() > 0.9
    fields = parse_infotext(out.infotexts[0])
    assert (fields["Mask blur"], fields["Masked content"], fields["Denoising strength"]) == ("0", "original", "0.75")
    inverted = changed(pipe(mask=mask, invert_mask=True, **run).tensors, init)
    assert inverted[:, :16].mean() > 0.9 and not inverted[:, 16:].any()
    blurred = changed(pipe(mask=mask, mask_blur=3, inpainting_fill=0, **run).tensors, init)
    assert blurred[:, 10:16].any() and not blurred[:, :6].any()
    noise = pipe(mask=mask, inpainting_fill=2, strength=0.5, **{k: v for k, v in run.items() if k != "strength"})
    assert not changed(noise.tensors, init)[:, :16].any()


# --- the command line -------------------------------------------------------------------------------------


@pytest.fixture
def picture(tmp_path):
    """A 12x10 grayscale gradient and a mask with a white 5x4 box."""
    Image.fromarray(np.tile(np.linspace(0, 255, 12).astype(np.uint8), (10, 1))).save(tmp_path / "in.png")
    mask = np.zeros((10, 12), np.uint8)
    mask[2:6, 3:8] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    return tmp_path / "in.png", tmp_path / "mask.png", mask > 0


def test_inpaint_command_with_a_class_model(ddpm, picture, run_cli, tmp_path):
    image, mask_file, mask = picture
    status, _, err = run_cli("inpaint", image, mask_file, "3", "--model", ddpm, "--steps", 6, "--mask-blur", 0,
                             "--strength", 1, "-n", 2, "-o", tmp_path / "out")
    assert status == 0, err
    original = np.asarray(Image.open(image))
    for name in ("00000.png", "00001.png"):
        got = np.asarray(Image.open(tmp_path / "out" / name))
        assert got.shape == original.shape  # the picture keeps its size (the model works at 8x8)
        assert np.array_equal(got[~mask], original[~mask]) and (got[mask] != original[mask]).any()
    fields = parse_infotext(read_infotext(tmp_path / "out" / "00000.png"))
    assert (fields["Class"], fields["Mask blur"], fields["Masked content"], fields["Denoising strength"]) == \
        ("3", "0", "original", "1.0")
    status, _, err = run_cli("inpaint", image, mask_file, "--model", ddpm, "--steps", 6, "--mask-blur", 0,
                             "--invert-mask", "--inpainting-fill", 2, "-o", tmp_path / "inv")
    assert status == 0, err
    got = np.asarray(Image.open(tmp_path / "inv" / "00000.png"))
    assert np.array_equal(got[mask], original[mask]) and "Class" not in read_infotext(tmp_path / "inv" / "00000.png")


@pytest.mark.parametrize("args, message", [
    (["--model", "fashion-vae"], "fashion-vae (vae) cannot inpaint; use a diffusion model"),
    (["dragon", "--model", "DDPM"], "unknown class 'dragon'"),
    (["--model", "DDPM", "--mask-blur", "65"], "mask blur must be a whole number of pixels from 0 to 64"),
])
def test_inpaint_command_errors(ddpm, picture, run_cli, args, message):
    image, mask_file, _ = picture
    status, _, err = run_cli("inpaint", image, mask_file, *[str(ddpm) if a == "DDPM" else a for a in args],
                             "--steps", 2)
    assert status == 1 and message in err and err.count("\n") == 1
    status, _, err = run_cli("inpaint", image, mask_file, "--model", ddpm, "--inpainting-fill", 4)
    assert status == 2 and "--inpainting-fill" in err


def test_outpaint_command_with_a_class_model(ddpm, picture, run_cli, tmp_path):
    image, _, _ = picture
    status, _, err = run_cli("outpaint", image, "7", "--model", ddpm, "--left", 4, "--up", 2, "--down", 1,
                             "--steps", 6, "--mask-blur", 0, "-o", tmp_path / "out")
    assert status == 0, err
    got, original = np.asarray(Image.open(tmp_path / "out" / "00000.png")), np.asarray(Image.open(image))
    assert got.shape == (13, 16) and np.array_equal(got[2:12, 4:], original)
    assert "Denoising strength: 0.8" in read_infotext(tmp_path / "out" / "00000.png")
    status, _, err = run_cli("outpaint", image, "--model", ddpm)
    assert status == 1 and "outpainting needs at least one of left, right, up, down above 0" in err


def test_inpaint_and_outpaint_commands_with_stable_diffusion(sd_folder, run_cli, tmp_path):
    pixels = as_uint8(smooth_image(20, 30))[0].transpose(1, 2, 0)
    Image.fromarray(pixels).save(tmp_path / "in.png")
    status, _, err = run_cli("outpaint", tmp_path / "in.png", PROMPT, "--model", sd_folder, "--right", 2,
                             "--down", 4, "--steps", 2, "--mask-blur", 0, "--sampler", "DDIM", "-o", tmp_path / "o")
    assert status == 0, err
    got = np.asarray(Image.open(tmp_path / "o" / "00000.png"))
    assert got.shape == (24, 32, 3) and np.array_equal(got[:20, :30], pixels)
    assert np.abs(got[20:, :30].astype(int) - pixels[-1:].astype(int)).mean() > 1  # not the stretched edge
    fields = parse_infotext(read_infotext(tmp_path / "o" / "00000.png"))
    assert (fields["Prompt"], fields["Size"], fields["Mask blur"]) == (PROMPT, "32x24", "0")
    mask = np.zeros((20, 30), np.uint8)
    mask[5:15, 10:25] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    status, _, err = run_cli("inpaint", tmp_path / "in.png", tmp_path / "mask.png", PROMPT, "--model", sd_folder,
                             "--steps", 2, "--mask-blur", 2, "-o", tmp_path / "i")
    assert status == 0, err
    got = np.asarray(Image.open(tmp_path / "i" / "00000.png"))
    assert got.shape == (20, 30, 3)  # made at 32x24, pasted back at the picture's size
    far = np.ones((20, 30), bool)
    far[:, 10 - 6:] = False  # further than the blur (2 px, 5 taps) reaches
    assert np.array_equal(got[far], pixels[far]) and (got[mask > 0] != pixels[mask > 0]).any()


def test_trained_latent_diffusion_model_inpaints(tmp_path_factory):
    """`genpix train ldm` models run the Stable Diffusion loop, so the latent mask too (1-channel digits)."""
    from genpix.cli import main

    root = tmp_path_factory.mktemp("ldm")
    data = ["--data", "digits", "--image-size", "16", "--limit", "32", "--batch-size", "8", "--quiet", "--device",
            "cpu"]
    assert main(["train", "autoencoder", *data, "--block-out-channels", "8,16,16", "--norm-num-groups", "4",
                 "--steps", "2", "--sample-every", "2", "--out", str(root / "ae")]) == 0
    assert main(["train", "ldm", *data, "--cond", "none", "--block-out-channels", "16,32", "--head-channels", "8", "--norm-num-groups",
                 "8", "--autoencoder", str(root / "ae"), "--steps", "2", "--sample-every", "2",
                 "--out", str(root / "ldm")]) == 0
    pipe = genpix.load_pipeline(str(root / "ldm"))
    assert pipe.capabilities.inpaint and not pipe.capabilities.inpainting_model  # the latent mask
    init = torch.randint(0, 256, (1, 1, 16, 16), generator=torch.Generator().manual_seed(0)).float() / 255
    region = changed(pipe(steps=3, seed=1, init_images=init, mask=half_mask(16), strength=1.0).tensors, init)
    assert not region[:, :8].any() and region[:, 8:].mean() > 0.9
