"""Inpainting and outpainting through `genpix serve`'s /sdapi/v1/img2img, with the real `webuiapi`
client on a loopback server: a mask (with sd-webui's blur, fill and invert fields) and the
"Poor man's outpainting" / "Outpainting mk2" scripts, on a tiny class-conditional pixel model."""

import numpy as np
import pytest
import requests
import webuiapi
from PIL import Image
from server_harness import ServerThread, train_tiny_class_model

from genpix.io.images import parse_infotext
from genpix.server import create_app

MODEL = {"sd_model_checkpoint": "digits-ddpm"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    models = tmp_path_factory.mktemp("inpaint-server") / "models"
    train_tiny_class_model(models)
    with ServerThread(create_app(models_dir=models)) as url:
        yield url


@pytest.fixture(scope="module")
def api(server):
    return webuiapi.WebUIApi(host="127.0.0.1", port=int(server.rsplit(":", 1)[1]), sampler="Euler a", steps=6)


def init_picture() -> Image.Image:
    rng = np.random.default_rng(5)
    return Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8), mode="L")


def box_mask() -> tuple[Image.Image, np.ndarray]:
    mask = np.zeros((8, 8), np.uint8)
    mask[2:6, 1:5] = 255
    return Image.fromarray(mask, mode="L"), mask > 0


def test_img2img_with_a_mask_keeps_the_unmasked_pixels(api):
    init, (mask_picture, mask) = init_picture(), box_mask()
    run = dict(images=[init], mask_image=mask_picture, mask_blur=0, denoising_strength=1.0, prompt="2", seed=7,
               width=8, height=8, batch_size=2, override_settings=MODEL)
    result = api.img2img(inpainting_fill=1, **run)
    original = np.asarray(init)
    for image in result.images:
        got = np.asarray(image)
        assert image.size == (8, 8) and np.array_equal(got[~mask], original[~mask])
        assert (got[mask] != original[mask]).any()
    fields = parse_infotext(result.info["infotexts"][0])
    assert (fields["Mask blur"], fields["Masked content"], fields["Denoising strength"]) == ("0", "original", "1.0")
    inverted = np.asarray(api.img2img(inpainting_mask_invert=1, inpainting_fill=3, **run).image)
    assert np.array_equal(inverted[mask], original[mask]) and (inverted[~mask] != original[~mask]).any()
    blurred = np.asarray(api.img2img(**{**run, "mask_blur": 1}).image)  # webuiapi's fill 0 ("fill")
    assert (blurred[~mask] != original[~mask]).any()  # the repaint fades past the mask's edge


@pytest.mark.parametrize("script, args, size, box", [
    ("Poor man's outpainting", [4, 0, 1, ["left", "right", "up", "down"]], (16, 16), (4, 12, 4, 12)),
    ("Outpainting mk2", [None, 8, 0, ["right"], 1.0, 0.05], (16, 8), (0, 8, 0, 8)),
    ("outpainting MK2", [None, 3, 0, ["up", "left"]], (11, 11), (3, 11, 3, 11)),
])
def test_outpainting_scripts_return_a_larger_picture(api, script, args, size, box):
    init = init_picture()
    result = api.img2img(images=[init], prompt="5", seed=3, denoising_strength=0.9, script_name=script,
                         script_args=args, override_settings=MODEL)
    image = result.image
    x0, x1, y0, y1 = box
    assert image.size == size and np.array_equal(np.asarray(image)[y0:y1, x0:x1], np.asarray(init))
    assert (result.info["width"], result.info["height"]) == size
    assert np.asarray(image).std() > 0 and "Mask blur: 0" in result.info["infotexts"][0]


def test_scripts_are_listed_and_bad_script_requests_are_422(api, server):
    assert api.get_scripts()["img2img"] == ["outpainting mk2", "poor man's outpainting"]
    body = {"init_images": [webuiapi.raw_b64_img(init_picture())], "override_settings": MODEL}
    for extra, detail in [
        ({"script_name": "x/y/z plot"}, "script 'x/y/z plot' not found for img2img; this server's img2img scripts: "
                                        "outpainting mk2, poor man's outpainting"),
        ({"script_name": "poor man's outpainting", "script_args": [0]},
         "script_args[0] (pixels) must be a whole number from 1 to 2048, got 0"),
        ({"script_name": "poor man's outpainting", "script_args": [8, 4, 0, ["sideways"]]},
         "script_args[3] (direction) must be a non-empty list of left, right, up, down"),
    ]:
        r = requests.post(f"{server}/sdapi/v1/img2img", json={**body, **extra}, timeout=60)
        assert r.status_code == 422 and detail in r.json()["detail"], r.text
    r = requests.post(f"{server}/sdapi/v1/txt2img", json={"script_name": "outpainting mk2"}, timeout=60)
    assert r.status_code == 422 and "not found for txt2img" in r.json()["detail"]
