"""Bad input for the latent-diffusion path (genpix-trained text models; the bundled shapes-ldm)
through the real `genpix generate`, `inpaint` and `outpaint`: a prompt that is not UTF-8, a mask of
another size or all black, outpainting by 0 pixels, a size off the latent grid. Each is one clear
line and a non-zero exit, or a warning and a defined result; never a traceback or a mangled prompt."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from test_inpainting import sd_folder, smooth_image  # noqa: F401 (the tiny SD1 folder fixture)

import genpix

SIZE = 32  # shapes-ldm's pictures
BAD = "a red \udcff\udcfe circle"  # what Python makes of the argv bytes b"a red \xff\xfe circle"


def assert_one_line_error(status, err, message):
    lines = err.strip().splitlines()
    assert status != 0 and len(lines) == 1, err
    assert lines[0].startswith("genpix: error:") and message in lines[0], err


@pytest.fixture
def picture(tmp_path):
    """A 32x32 RGB picture, an all-black mask and a 16x16 mask (white top half) of another size."""
    pixels = np.random.default_rng(0).integers(0, 255, (SIZE, SIZE, 3), np.uint8)
    Image.fromarray(pixels).save(tmp_path / "in.png")
    Image.new("L", (SIZE, SIZE), 0).save(tmp_path / "black.png")
    small = np.zeros((16, 16), np.uint8)
    small[:8] = 255
    Image.fromarray(small).save(tmp_path / "small.png")
    return pixels, tmp_path / "in.png", tmp_path / "black.png", tmp_path / "small.png"


def test_invalid_utf8_prompt_bytes_on_the_command_line(tmp_path):
    """The real command with undecodable bytes in argv: one line, exit 1, no picture written."""
    result = subprocess.run([sys.executable, "-m", "genpix", "generate", b"a red \xff\xfe circle", "--steps", "2",
                             "-o", tmp_path / "o"], capture_output=True)
    err = result.stderr.decode("utf-8", "replace")
    assert_one_line_error(result.returncode, err, "the prompt is not valid UTF-8 text: undecodable bytes at "
                                                  "character 7")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("command", [
    ("generate", BAD, "--steps", "2"),
    ("generate", "a red circle", "--negative-prompt", "\udcc3(", "--steps", "2"),
    ("inpaint", "IN", "SMALL", BAD, "--model", "shapes-ldm", "--steps", "2"),
    ("outpaint", "IN", BAD, "--left", "8", "--model", "shapes-ldm", "--steps", "2"),
    ("img2img", "IN", BAD, "--model", "shapes-ldm", "--steps", "2"),
])
def test_invalid_utf8_prompts_of_every_command(command, picture, run_cli, tmp_path):
    _, image, _, small = picture
    args = [{"IN": image, "SMALL": small}.get(a, a) for a in command]
    status, _, err = run_cli(*args, "-o", tmp_path / "o")
    what = "negative prompt" if "--negative-prompt" in command else "prompt"
    assert_one_line_error(status, err, f"the {what} is not valid UTF-8 text")
    assert not (tmp_path / "o").exists()


def test_all_black_mask_returns_the_picture_with_a_warning(picture, run_cli, tmp_path):
    pixels, image, black, _ = picture
    status, _, err = run_cli("inpaint", image, black, "a red circle", "--model", "shapes-ldm", "--steps", "2",
                             "-n", "2", "-o", tmp_path / "o")
    assert status == 0, err
    assert "genpix: warning: the mask is all black (nothing to repaint)" in err and "sampling" not in err
    for name in ("00000.png", "00001.png"):
        assert np.array_equal(np.asarray(Image.open(tmp_path / "o" / name).convert("RGB")), pixels)
    # inverted, a white mask is all black too
    Image.new("L", (SIZE, SIZE), 255).save(tmp_path / "white.png")
    status, _, err = run_cli("inpaint", image, tmp_path / "white.png", "--invert-mask", "--model", "shapes-ldm",
                             "--steps", "2", "-o", tmp_path / "inv")
    assert status == 0, err
    assert np.array_equal(np.asarray(Image.open(tmp_path / "inv" / "00000.png").convert("RGB")), pixels)


def test_all_black_mask_is_one_code_path_for_ldm_and_sd(sd_folder):  # noqa: F811
    """The Python API of the pipelines (the LDM one inherits the SD loop; the pixel one, fashion-ddpm,
    makes the same check): the init images, unchanged, and no sampling."""
    for pipe, init, prompt in ((genpix.load_pipeline("shapes-ldm"), torch.rand(1, 3, SIZE, SIZE), "a red circle"),
                               (genpix.load_pipeline(str(sd_folder)), smooth_image(), "a red circle"),
                               (genpix.load_pipeline("fashion-ddpm"), torch.rand(1, 1, 28, 28), None)):
        calls = []
        size = init.shape[-1]
        with pytest.warns(UserWarning, match="the mask is all black"):
            out = pipe(**({"prompt": prompt} if prompt else {}), n=2, steps=2, seed=0, init_images=init,
                       mask_blur=4, mask=torch.zeros(1, 1, size, size), callback=calls.append)
        assert torch.equal(out.tensors, init.expand(2, -1, -1, -1)) and calls == []  # no sampling at all
        assert len(out.infotexts) == 2 and out.info["seeds"] == [0, 1]


def test_mask_of_another_size_is_resized(picture, run_cli, tmp_path):
    """A 16x16 mask on a 32x32 picture repaints the top half, stretched; the bottom comes back exactly."""
    pixels, image, _, small = picture
    status, _, err = run_cli("inpaint", image, small, "a red circle", "--model", "shapes-ldm", "--steps", "2",
                             "--mask-blur", "0", "--strength", "1", "-o", tmp_path / "o")
    assert status == 0, err
    got = np.asarray(Image.open(tmp_path / "o" / "00000.png").convert("RGB"))
    assert got.shape == pixels.shape
    assert np.array_equal(got[SIZE // 2 + 1:], pixels[SIZE // 2 + 1:])
    assert (got[: SIZE // 2 - 1] != pixels[: SIZE // 2 - 1]).mean() > 0.5


def test_outpaint_by_nothing_is_an_error(picture, run_cli, tmp_path):
    _, image, _, _ = picture
    for sides in ((), ("--left", "0", "--right", "0", "--up", "0", "--down", "0")):
        status, _, err = run_cli("outpaint", image, "a red circle", *sides, "--model", "shapes-ldm", "-o",
                                 tmp_path / "o")
        assert_one_line_error(status, err, "outpainting needs at least one of left, right, up, down above 0")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("size", [("--width", "36"), ("--height", "30"), ("--width", "4")])
def test_size_off_the_latent_grid_is_a_clear_error(size, run_cli, tmp_path):
    status, _, err = run_cli("generate", "a red circle", *size, "--steps", "2", "-o", tmp_path / "o")
    assert_one_line_error(status, err, "width and height must be positive multiples of 8")
