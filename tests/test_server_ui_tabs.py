"""The web UI's img2img, inpaint, outpaint and PNG-info tabs in headless Chromium (Playwright), on the
bundled fashion-ddpm model (28x28 grayscale, class-conditional): what the page sends is read from
its requests, and what it shows is read back from its download link."""

import base64
import io

import numpy as np
import pytest
import requests
from PIL import Image
from playwright.sync_api import expect
from server_harness import ServerThread, browser_page

from genpix.server import create_app

pytestmark = pytest.mark.slow  # a headless Chromium

SIZE = 28  # fashion-ddpm's pictures


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with ServerThread(create_app(models_dir=tmp_path_factory.mktemp("ui-tabs"), model="fashion-ddpm")) as url:
        yield url


@pytest.fixture(scope="module")
def page(server):
    with browser_page(server) as page:
        expect(page.locator("#model")).to_have_value(page.locator("#model option", has_text="fashion-ddpm")
                                                      .get_attribute("value"))
        expect(page.locator("#sampler_name option", has_text="Euler a")).to_be_attached()
        yield page


def init_picture() -> np.ndarray:
    return np.random.default_rng(3).integers(0, 256, (SIZE, SIZE), dtype=np.uint8)


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array, mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def from_data_url(url: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1] if url.startswith("data:") else url)))


def open_tab(page, name: str, seed: int) -> None:
    """Open a generation tab, upload the init picture, and set small runs of one image."""
    page.click(f"#tabs [data-tab={name}]")
    expect(page.locator(f"#tabs [data-tab={name}]")).to_have_attribute("aria-selected", "true")
    page.set_input_files("#init-file", files=[{"name": "in.png", "mimeType": "image/png",
                                                "buffer": png_bytes(init_picture())}])
    expect(page.locator("#canvas-box")).to_be_visible()
    for field, value in [("#prompt", "Sneaker"), ("#steps", "4"), ("#seed", str(seed)), ("#batch_size", "1")]:
        page.fill(field, value)


def generate(page, seed: int) -> tuple[dict, np.ndarray]:
    """Click Generate; (the JSON the page posted, the selected result fetched from its download link)."""
    with page.expect_request(lambda r: r.url.endswith("/sdapi/v1/img2img") or r.url.endswith("/txt2img")) as sent:
        page.click("#generate")
    expect(page.locator("#infotext")).to_contain_text(f"Seed: {seed}", timeout=30_000)
    expect(page.locator("#gallery img")).to_have_count(1)
    result = from_data_url(page.locator("#download").get_attribute("href"))
    return sent.value.post_data_json, np.asarray(result.convert("L"))


def test_img2img_sends_the_uploaded_picture_and_returns_an_image(page):
    open_tab(page, "img2img", seed=9)
    expect(page.locator("#mask-canvas")).to_be_hidden()
    page.fill("#denoising_strength", "0.5")
    body, result = generate(page, seed=9)
    assert np.array_equal(np.asarray(from_data_url(body["init_images"][0])), init_picture())
    assert body["denoising_strength"] == 0.5 and "mask" not in body and "script_name" not in body
    assert result.shape == (SIZE, SIZE) and result.std() > 0
    expect(page.locator("#infotext")).to_contain_text("Denoising strength: 0.5")


def test_inpaint_repaints_only_the_stroke_drawn_on_the_canvas(page):
    open_tab(page, "inpaint", seed=11)
    page.click("#generate")  # nothing drawn yet
    expect(page.locator("#error")).to_contain_text("draw a mask over the picture first")
    page.fill("#brush_size", "3")
    page.fill("#mask_blur", "0")
    page.select_option("#inpainting_fill", "1")  # original
    page.fill("#denoising_strength", "1")
    page.locator("#mask-canvas").scroll_into_view_if_needed()  # the Generate click scrolled the page down
    box = page.locator("#mask-canvas").bounding_box()  # in viewport coordinates, as page.mouse takes them

    def at(x: int, y: int) -> tuple[float, float]:  # the middle of picture pixel (x, y) on the screen
        return box["x"] + (x + 0.5) * box["width"] / SIZE, box["y"] + (y + 0.5) * box["height"] / SIZE

    page.mouse.move(*at(6, 14))
    page.mouse.down()
    page.mouse.move(*at(20, 14), steps=6)
    page.mouse.up()
    body, result = generate(page, seed=11)
    drawn = np.zeros((SIZE, SIZE), bool)
    drawn[13:16, 5:22] = True  # a 3-pixel square brush along row 14 from x=6 to x=20
    mask = np.asarray(from_data_url(body["mask"]).convert("L"))
    assert np.array_equal(mask > 0, drawn) and set(np.unique(mask)) == {0, 255}
    assert (body["mask_blur"], body["inpainting_fill"], body["inpainting_mask_invert"]) == (0, 1, 0)
    original = init_picture()
    assert np.array_equal(result[~drawn], original[~drawn])  # outside the stroke: the upload, pixel for pixel
    assert (result[drawn] != original[drawn]).any()
    expect(page.locator("#error")).to_be_hidden()


def test_outpaint_returns_a_larger_picture_with_the_upload_in_it(page):
    open_tab(page, "outpaint", seed=13)
    page.fill("#outpaint_pixels", "8")
    page.fill("#mask_blur", "0")
    page.fill("#denoising_strength", "0.9")
    for direction in ("up", "down"):
        page.uncheck(f"#directions input[value={direction}]")
    body, result = generate(page, seed=13)
    assert body["script_name"] == "Poor man's outpainting" and body["script_args"][0] == 8
    assert body["script_args"][3] == ["left", "right"]
    assert result.shape == (SIZE, SIZE + 16)
    assert np.array_equal(result[:, 8:8 + SIZE], init_picture())
    assert result[:, :8].std() > 0 and result[:, -8:].std() > 0


def test_png_info_reads_the_parameters_and_sends_them_to_txt2img(page, server):
    page.click("#tabs [data-tab=pnginfo]")
    expect(page.locator("#generate")).to_be_hidden()
    page.set_input_files("#png-file", files=[{"name": "plain.png", "mimeType": "image/png",
                                               "buffer": png_bytes(init_picture())}])
    expect(page.locator("#png-info-text")).to_have_text("this picture carries no parameters")
    expect(page.locator("#send-to-txt2img")).to_be_disabled()

    answer = requests.post(f"{server}/sdapi/v1/txt2img", timeout=60, json={
        "prompt": "Trouser", "seed": 4242, "steps": 7, "sampler_name": "Euler a", "cfg_scale": 2.5, "batch_size": 1})
    assert answer.status_code == 200, answer.text
    made = base64.b64decode(answer.json()["images"][0])
    page.set_input_files("#png-file", files=[{"name": "made.png", "mimeType": "image/png", "buffer": made}])
    expect(page.locator("#png-info-text")).to_contain_text("Seed: 4242")
    page.click("#send-to-txt2img")
    expect(page.locator("#tabs [data-tab=txt2img]")).to_have_attribute("aria-selected", "true")
    expect(page.locator("#generate")).to_be_visible()
    for field, value in [("#prompt", "Trouser"), ("#seed", "4242"), ("#steps", "7"), ("#cfg_scale", "2.5"),
                         ("#sampler_name", "Euler a"), ("#width", "28"), ("#height", "28")]:
        expect(page.locator(field)).to_have_value(value)
    page.fill("#batch_size", "1")
    body, result = generate(page, seed=4242)  # the same parameters make the same picture again
    assert body["prompt"] == "Trouser" and "init_images" not in body
    assert np.array_equal(result, np.asarray(Image.open(io.BytesIO(made)).convert("L")))
