"""Every method of the `webuiapi` client that maps to a core sd-webui route, against a real `genpix serve`
on loopback: each answer parses in the client and has sd-webui's shape (the rest of the client, ControlNet,
prompt generators and extensions, are other projects' routes). Interrogation, which needs a captioning
model genpix does not have, is a clear 4xx."""

from __future__ import annotations

import pytest
import requests
import webuiapi
from PIL import Image
from server_harness import ServerThread

from genpix.server import create_app


@pytest.fixture(scope="module")
def api():
    with ServerThread(create_app()) as url:
        host, port = url.removeprefix("http://").split(":")
        client = webuiapi.WebUIApi(host=host, port=int(port), sampler="Euler", steps=2)
        client.server_url = url
        yield client


def test_list_routes(api):
    assert "DPM++ 2M" in [s["name"] for s in api.get_samplers()]
    assert "Karras" in [s["label"] for s in api.get_schedulers()]
    assert [u["name"] for u in api.get_upscalers()][:3] == ["None", "Lanczos", "Nearest"]
    assert {m["name"] for m in api.get_latent_upscale_modes()} >= {"Latent", "Latent (nearest-exact)"}
    assert isinstance(api.get_realesrgan_models(), list)
    assert any(m["title"].startswith("shapes-ldm") for m in api.get_sd_models())
    assert isinstance(api.get_sd_vae(), list) and isinstance(api.get_prompt_styles(), list)
    assert api.get_face_restorers() == [] and api.get_hypernetworks() == []  # genpix has neither
    assert set(api.get_embeddings()) >= {"loaded", "skipped"}
    assert isinstance(api.get_loras(), list)
    assert "ram" in api.get_memory() and isinstance(api.get_cmd_flags(), dict)
    assert set(api.get_scripts()) >= {"txt2img", "img2img"}
    api.refresh_checkpoints()
    assert "shapes-ldm" in " ".join(api.util_get_model_names())
    assert "Euler a" in api.util_get_sampler_names() and api.util_get_scheduler_names()


def test_generation_progress_and_control(api):
    api.util_set_model("shapes-ldm")
    assert api.util_get_current_model().startswith("shapes-ldm")
    result = api.txt2img(prompt="a red circle at the top left", seed=3, steps=2, width=32, height=32)
    assert result.image.size == (32, 32) and result.info["all_seeds"] == [3]
    changed = api.img2img(images=[result.image], prompt="a blue square", denoising_strength=0.5, steps=2,
                          width=32, height=32, seed=3)
    assert changed.image.size == (32, 32)
    info = api.png_info(result.image)
    assert "Steps: 2" in info.info
    api.set_options({"CLIP_stop_at_last_layers": 1})
    assert api.get_options()["CLIP_stop_at_last_layers"] == 1
    assert set(api.get_progress()) >= {"progress", "eta_relative", "state"}
    api.interrupt()
    api.skip()
    api.util_wait_for_ready(check_interval=0.1)  # returns once progress is 0 with no job (or loops forever)
    extras = api.extra_single_image(result.image, upscaler_1="Nearest", upscaling_resize=2)
    assert extras.image.size == (64, 64)


def test_interrogate_is_a_clear_refusal(api):
    r = requests.post(f"{api.server_url}/sdapi/v1/interrogate",
                      json={"image": webuiapi.raw_b64_img(Image.new("RGB", (8, 8))), "model": "clip"}, timeout=30)
    assert 400 <= r.status_code < 500
