"""The web UI at / in a real browser: Debian's Chromium, headless, driven by Playwright's Python package."""

import base64
import io

import pytest
from PIL import Image
from playwright.sync_api import expect
from server_harness import ServerThread, browser_page, train_tiny_class_model

from genpix.server import create_app

pytestmark = pytest.mark.slow  # a headless Chromium


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    models = tmp_path_factory.mktemp("ui") / "models"
    train_tiny_class_model(models)
    with ServerThread(create_app(models_dir=models, model="digits-ddpm")) as url:
        yield url


@pytest.fixture(scope="module")
def page(server):
    with browser_page(server) as page:
        yield page


def test_type_a_prompt_generate_enlarge_and_download(page):
    from genpix.pipelines.models import bundled_models

    expect(page.locator("#model option")).to_have_count(len(bundled_models()) + 1)  # the bundled ones and digits-ddpm
    expect(page.locator("#model")).to_have_value(page.locator("#model option", has_text="digits-ddpm")
                                                  .get_attribute("value"))
    expect(page.locator("#sampler_name option", has_text="DPM++ 2M").first).to_be_attached()
    page.fill("#prompt", "3")
    page.fill("#steps", "4")
    page.fill("#seed", "21")
    page.click("#generate")
    images = page.locator("#gallery img")
    expect(images).to_have_count(4, timeout=30_000)
    assert images.first.evaluate("img => img.naturalWidth") == 8
    expect(page.locator("#infotext")).to_contain_text("Class: 3")
    expect(page.locator("#infotext")).to_contain_text("Seed: 21")
    images.nth(1).click()  # enlarge the second result
    expect(page.locator("#lightbox")).to_be_visible()
    expect(page.locator("#infotext")).to_contain_text("Seed: 22")
    href = page.locator("#download").get_attribute("href")
    assert page.locator("#download").get_attribute("download") == "genpix-22.png"
    png = Image.open(io.BytesIO(base64.b64decode(href.split(",", 1)[1])))
    assert png.size == (8, 8) and "Class: 3" in png.info["parameters"]
    page.click("#lightbox")
    expect(page.locator("#lightbox")).to_be_hidden()


def test_an_unknown_class_shows_the_error_and_the_model_picker_switches(page):
    page.fill("#prompt", "sneaker")
    page.click("#generate")
    expect(page.locator("#error")).to_contain_text("unknown class 'sneaker'; this model knows: 0, 1, 2")
    vae = page.locator("#model option", has_text="fashion-vae").get_attribute("value")
    page.select_option("#model", vae)
    expect(page.locator("#generate")).to_be_enabled()
    page.fill("#prompt", "")
    page.fill("#batch_size", "2")
    page.click("#generate")
    expect(page.locator("#gallery img")).to_have_count(2, timeout=30_000)
    assert page.locator("#gallery img").first.evaluate("img => img.naturalWidth") == 28
    expect(page.locator("#error")).to_be_hidden()
