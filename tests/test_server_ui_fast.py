"""The web UI's Fast box in headless Chromium (Playwright): ticked, it puts the model's fast preset (GET
/genpix/fast-preset, the `genpix generate --fast` preset) into the form and sends its less-work settings with
txt2img; the bundled shapes-ldm (32x32 text-to-image) at its own size, a few steps."""

import base64
import io
import json

import numpy as np
import pytest
import requests
from PIL import Image
from playwright.sync_api import expect
from server_harness import ServerThread, browser_page

from genpix.server import create_app

pytestmark = pytest.mark.slow  # a headless Chromium

LESS_WORK = {"deepcache_interval": 2, "deepcache_block": 0, "token_merging_ratio": 0.5, "tiny_decode": True}


@pytest.fixture(scope="module")
def opened(tmp_path_factory):
    """(server URL, the page on it) with shapes-ldm selected."""
    app = create_app(models_dir=tmp_path_factory.mktemp("ui-fast"), model="shapes-ldm")
    with ServerThread(app) as url, browser_page(url) as page:
        shapes = page.locator("#model option", has_text="shapes-ldm").get_attribute("value")
        expect(page.locator("#model")).to_have_value(shapes)
        expect(page.locator("#scheduler option[value=karras]")).to_be_attached()
        yield url, page


@pytest.fixture(scope="module")
def page(opened):
    return opened[1]


def generate(page, seed: int) -> tuple[dict, np.ndarray]:
    """Click Generate; (the JSON the page posted, the selected result's pixels from its download link)."""
    with page.expect_response(lambda r: r.url.endswith("/sdapi/v1/txt2img"), timeout=30_000) as answer:
        page.click("#generate")
    infotext = json.loads(answer.value.json()["info"])["infotexts"][0]
    assert f"Seed: {seed}" in infotext
    expect(page.locator("#infotext")).to_have_text(infotext)  # this answer shown (the last one may read alike)
    expect(page.locator("#gallery img")).to_have_count(1)
    href = page.locator("#download").get_attribute("href")
    picture = Image.open(io.BytesIO(base64.b64decode(href.split(",", 1)[1])))
    return answer.value.request.post_data_json, np.asarray(picture, dtype=np.int16)


def test_fast_puts_the_preset_in_the_form_and_its_settings_in_the_request(opened):
    server, page = opened
    for field, value in [("#prompt", "a red circle"), ("#seed", "5"), ("#batch_size", "1"), ("#cfg_scale", "4")]:
        page.fill(field, value)
    page.check("#fast")
    expect(page.locator("#steps")).to_have_value("15")
    expect(page.locator("#sampler_name")).to_have_value("DPM++ 2M")
    expect(page.locator("#scheduler")).to_have_value("karras")
    expect(page.locator("#cfg_scale")).to_have_value("4")  # the preset leaves CFG to the user
    expect(page.locator("#fast-status")).to_have_text(
        "15 steps, DPM++ 2M Karras, DeepCache every 2, token merging 0.5, tiny decoder")
    page.fill("#steps", "4")  # the user still edits the form: few steps
    body, fast = generate(page, 5)
    assert body["steps"] == 4 and body["sampler_name"] == "DPM++ 2M" and body["scheduler"] == "karras"
    assert {k: body["override_settings"][k] for k in LESS_WORK} == LESS_WORK
    assert body["override_settings_restore_afterwards"] is True  # the server's /options stay as they were
    assert fast.shape[:2] == (32, 32)  # the model's own size
    for part in ("Steps: 4", "Schedule type: Karras", "Token merging ratio: 0.5", "DeepCache interval: 2",
                 "Tiny decode: True"):
        expect(page.locator("#infotext")).to_contain_text(part)

    page.uncheck("#fast")
    expect(page.locator("#fast-status")).to_have_text("")
    expect(page.locator("#steps")).to_have_value("4")  # the user's edit stays
    expect(page.locator("#sampler_name")).to_have_value("")  # the others are back
    expect(page.locator("#scheduler")).to_have_value("automatic")
    page.select_option("#sampler_name", "DPM++ 2M")
    page.select_option("#scheduler", "karras")
    body, exact = generate(page, 5)
    assert not set(LESS_WORK) & set(body["override_settings"])
    assert {k: requests.get(f"{server}/sdapi/v1/options", timeout=60).json()[k] for k in LESS_WORK} == {
        "deepcache_interval": 0, "deepcache_block": 0, "token_merging_ratio": 0.0, "tiny_decode": False}
    expect(page.locator("#infotext")).not_to_contain_text("DeepCache")
    assert np.abs(fast - exact).max() > 0
    alone = requests.post(f"{server}/sdapi/v1/txt2img", json={**body, "override_settings": {
        **body["override_settings"], **LESS_WORK}}, timeout=60).json()["images"][0]
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(base64.b64decode(alone))), dtype=np.int16), fast)


def test_fast_on_a_model_without_a_preset_is_switched_off_with_the_reason(page):
    shapes = page.locator("#model").input_value()
    page.check("#fast")
    expect(page.locator("#fast-status")).to_contain_text("DeepCache every 2")
    page.select_option("#model", page.locator("#model option", has_text="fashion-vae").get_attribute("value"))
    expect(page.locator("#error")).to_contain_text("fashion-vae (vae) generates in one pass: it has no fast preset")
    expect(page.locator("#fast")).not_to_be_checked()
    expect(page.locator("#fast-status")).to_have_text("")
    page.select_option("#model", shapes)
    expect(page.locator("#generate")).to_be_enabled()
