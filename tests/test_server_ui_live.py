"""The web UI's live preview and style menu in headless Chromium (issue 18): while a slow-enough job samples,
the page shows /progress's current_image (the preview at the model's size) before the results arrive; the
style menu lists --styles-file's styles and the chosen one reaches the request (the infotext's class)."""

import pytest
from playwright.sync_api import expect
from safetensors.torch import save_file
from server_harness import ServerThread, browser_page, train_tiny_class_model
from test_lora import kohya_lora
from test_sd_pipeline import tiny_diffusers
from test_tokenizer import CORPUS, train_bpe

from genpix.server import create_app
from genpix.server.limits import Limits

pytestmark = pytest.mark.slow  # a headless Chromium


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    root = tmp_path_factory.mktemp("ui-live")
    train_tiny_class_model(root / "models")
    (root / "styles.csv").write_text("name,prompt,negative_prompt\nthree,3,\n")  # a class name as a style
    (root / "loras").mkdir()  # a LoRA file of a tiny SD model, for the LoRA menu
    save_file(kohya_lora(tiny_diffusers(root, train_bpe(CORPUS, 60), "sd1")), str(root / "loras" / "ink.safetensors"))
    app = create_app(models_dir=root / "models", model="digits-ddpm", styles_file=root / "styles.csv",
                     limits=Limits(max_images=1000), lora_dir=root / "loras")
    with ServerThread(app) as url, browser_page(url) as page:
        yield page


def test_the_live_preview_shows_while_sampling(page):
    page.fill("#prompt", "3")
    page.fill("#steps", "100")
    page.fill("#batch_size", "1")
    page.fill("#n_iter", "12")  # about 3 s of sampling on the tiny model: several polls every 400 ms
    page.click("#generate")
    preview = page.locator("#preview")
    expect(preview).to_be_visible(timeout=20_000)
    assert page.locator("#gallery img").count() == 0  # still sampling: no results yet
    assert preview.evaluate("img => img.naturalWidth") == 8
    assert preview.get_attribute("src").startswith("data:image/png")
    expect(page.locator("#gallery img")).to_have_count(12, timeout=60_000)
    expect(preview).to_be_hidden()


def test_the_style_menu_applies_a_style(page):
    expect(page.locator("#styles-box")).to_be_visible()
    expect(page.locator("#styles option")).to_have_text(["three"])
    page.select_option("#styles", ["three"])
    page.fill("#prompt", "")  # unconditional without the style
    page.fill("#steps", "2")
    page.fill("#n_iter", "1")
    page.click("#generate")
    expect(page.locator("#gallery img")).to_have_count(1, timeout=30_000)
    expect(page.locator("#infotext")).to_contain_text("Class: 3")


def test_the_lora_menu_inserts_a_tag(page):
    expect(page.locator("#loras-box")).to_be_visible()
    page.fill("#prompt", "a horse")
    page.select_option("#loras", "ink")
    expect(page.locator("#prompt")).to_have_value("a horse <lora:ink:1>")
