"""The web UI's Extras tab in headless Chromium (Playwright): it lists the upscalers the server finds,
posts the uploaded picture to /extra-single-image and shows the upscaled PNG with its infotext."""

import base64
import io

import numpy as np
import pytest
import torch
from PIL import Image
from playwright.sync_api import expect
from server_harness import ServerThread, browser_page

from genpix.io.upscaler_file import save_upscaler
from genpix.models.srvgg import SRVGGNetCompact, SRVGGNetConfig
from genpix.pipelines.extras import ExtrasConfig, run_extras
from genpix.pipelines.upscalers import UpscalerRegistry


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("ui-extras")
    torch.manual_seed(0)
    save_upscaler(SRVGGNetCompact(SRVGGNetConfig(scale=2, channels=3, num_features=8, num_conv=1)),
                  root / "ESRGAN" / "compact-x2.safetensors")
    (root / "models").mkdir()
    return root


@pytest.fixture(scope="module")
def page(folders):
    from genpix.server import create_app

    app = create_app(models_dir=folders / "models", upscalers_dir=folders / "ESRGAN", model="fashion-vae")
    with ServerThread(app) as url, browser_page(url) as page:
        yield page


def picture() -> Image.Image:
    return Image.fromarray(np.random.default_rng(5).integers(0, 256, (12, 16, 3), dtype=np.uint8))


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_extras_tab_upscales_with_the_chosen_model(page, folders):
    page.click("#tabs [data-tab=extras]")
    expect(page.locator("#extras")).to_be_visible()
    expect(page.locator("#controls")).to_be_hidden()
    options = page.locator("#extras-upscaler-1 option")
    expect(options).to_have_count(4)
    assert options.all_inner_texts() == ["None", "Lanczos", "Nearest", "compact-x2 (x2)"]
    expect(page.locator("#extras-upscaler-1")).to_have_value("compact-x2")
    page.set_input_files("#extras-file", files=[{"name": "cat.png", "mimeType": "image/png",
                                                  "buffer": png_bytes(picture())}])
    page.fill("#extras-scale", "2")
    with page.expect_request(lambda r: r.url.endswith("/sdapi/v1/extra-single-image")) as sent:
        page.click("#extras-run")
    expect(page.locator("#infotext")).to_have_text("Postprocess upscale by: 2, Postprocess upscaler: compact-x2",
                                                   timeout=30_000)
    body = sent.value.post_data_json
    assert (body["upscaler_1"], body["upscaling_resize"], body["resize_mode"]) == ("compact-x2", 2, 0)
    href = page.locator("#download").get_attribute("href")
    shown = Image.open(io.BytesIO(base64.b64decode(href.split(",", 1)[1])))
    expected, _ = run_extras(picture(), UpscalerRegistry(folders / "ESRGAN"),
                             ExtrasConfig(upscaler_1="compact-x2", scale=2))
    assert shown.size == (32, 24)
    assert np.array_equal(np.asarray(shown.convert("RGB")), np.asarray(expected))
    assert page.locator("#download").get_attribute("download") == "genpix-cat-upscaled.png"


def test_extras_tab_shows_errors(page):
    page.click("#tabs [data-tab=extras]")
    page.fill("#extras-scale", "20")
    page.click("#extras-run")
    expect(page.locator("#error")).to_contain_text("upscaling_resize")
