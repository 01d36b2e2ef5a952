"""The models shipped inside the package load by name and do what their cards say."""

import numpy as np
import pytest

import genpix
from genpix.data.synthetic import describe_shapes_image


def test_genpix_models_lists_every_bundled_model(run_cli):
    status, out, err = run_cli("models")
    assert status == 0, err
    names = [line.split()[0] for line in out.splitlines()]
    assert {"fashion-ddpm", "fashion-vae", "shapes-ldm", "fashion-ldm", "emoji-ldm"} <= set(names)


@pytest.mark.parametrize("prompt, expected", [
    ("a red circle at the top left", ("circle", "red", "top left")),
    ("a blue square in the centre", ("square", "blue", "centre")),
])
def test_shapes_ldm_draws_what_the_prompt_says(prompt, expected):
    """The bundled text-to-image model: the shape reader finds the prompt's shape, colour and place."""
    out = genpix.load_pipeline("shapes-ldm")(prompt=prompt, n=2, seed=0, steps=10, sampler="DPM++ 2M", cfg_scale=5)
    seen = [describe_shapes_image(np.asarray(im.convert("RGB")).transpose(2, 0, 1)) for im in out.images]
    assert seen == [expected, expected]


def bright_box(image) -> tuple[int, int]:
    """(height, width) of the box holding the pixels brighter than 1/4 of the image's maximum."""
    pixels = np.asarray(image.convert("L"), dtype=float)
    rows, cols = np.nonzero(pixels > pixels.max() / 4)
    return rows.max() - rows.min() + 1, cols.max() - cols.min() + 1


@pytest.mark.parametrize("prompt, tall", [("jeans", True), ("a pair of trousers", True), ("a purse", False),
                                          ("a running shoe", False)])
def test_fashion_ldm_follows_reworded_prompts(prompt, tall):
    """The bundled Fashion-MNIST text model (frozen MiniLM): trousers are tall and narrow, bags and shoes
    wide, also for words it never saw in training ("jeans", "a purse", "a running shoe")."""
    out = genpix.load_pipeline("fashion-ldm")(prompt=prompt, n=3, seed=0, steps=10, sampler="DPM++ 2M", cfg_scale=5)
    for image in out.images:
        height, width = bright_box(image)
        assert (height > 1.5 * width) if tall else (width > height), (prompt, height, width)


def test_fashion_ddpm_samples_a_class_the_same_in_any_batch():
    pipe = genpix.load_pipeline("fashion-ddpm")
    two = pipe(n=2, seed=5, steps=8, sampler="DPM++ 2M", class_name="sneaker")
    one = pipe(n=1, seed=6, steps=8, sampler="DPM++ 2M", class_name="sneaker")
    assert two.tensors.shape == (2, 1, 28, 28)
    assert np.array_equal(np.asarray(two.images[1]), np.asarray(one.images[0]))
    assert "Class: Sneaker" in one.infotexts[0]


def test_generate_without_a_model_uses_the_bundled_text_to_image_model(run_cli, tmp_path):
    from PIL import Image

    from genpix.eval.colour_reader import read_picture

    status, out, err = run_cli("generate", "a red heart", "-n", "1", "--steps", "10", "--cfg-scale", "5",
                               "--seed", "1", "-o", tmp_path)
    assert status == 0, err
    image = Image.open(tmp_path / "00000.png")
    assert "a red heart" in image.info["parameters"] and "Model: emoji-ldm" in image.info["parameters"]
    assert image.size == (64, 64) and read_picture(image).colour == "red"
    status, _, err = run_cli("generate", "x", "--model", "fashion-vae", "-o", tmp_path / "v")
    assert status == 1 and "takes no prompt" in err
    status, _, err = run_cli("generate", "x", "--clip-skip", "2", "-o", tmp_path / "c")
    assert status == 1 and "takes no --clip-skip" in err


def test_interpolate_between_two_prompts(run_cli, tmp_path):
    """Seed 000 listing 17.10: slerp between text embeddings (and noises); the ends are the prompts."""
    import torch
    from PIL import Image

    a, b = "a red circle at the top left", "a blue square at the bottom right"
    status, out, err = run_cli("interpolate", "shapes-ldm", "--prompt-a", a, "--prompt-b", b, "--frames", "3",
                               "--steps", "10", "--seed", "4", "-o", tmp_path / "walk.png")
    assert status == 0, err
    strip = np.asarray(Image.open(tmp_path / "walk.png").convert("RGB"))
    assert (tmp_path / "walk.gif").is_file()
    frames = [strip[2:34, 2 + k * 34: 34 + k * 34] for k in range(3)]  # 32 px pictures, 2 px padding
    assert describe_shapes_image(frames[0].transpose(2, 0, 1)) == ("circle", "red", "top left")
    assert describe_shapes_image(frames[2].transpose(2, 0, 1)) == ("square", "blue", "bottom right")
    pipe = genpix.load_pipeline("shapes-ldm")
    noise = torch.randn((4, 8, 8), generator=torch.Generator().manual_seed(4))[None]
    start = pipe(prompt=a, latents=noise, steps=10, seed=4)
    assert np.abs(np.asarray(start.images[0], dtype=int) - frames[0]).max() <= 1  # t = 0: prompt a itself
    status, _, err = run_cli("interpolate", "fashion-vae", "--prompt-a", a, "--prompt-b", b)
    assert status == 1 and "not text-conditioned" in err
    status, _, err = run_cli("interpolate", "shapes-ldm", "--prompt-a", a)
    assert status == 1 and "both --prompt-a and --prompt-b" in err
