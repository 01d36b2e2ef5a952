"""sd-webui's Extras and upscaler routes on a real uvicorn server, driven by the `webuiapi` client
(and raw HTTP for the error cases)."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
import requests
import torch
import webuiapi
from PIL import Image, PngImagePlugin
from server_harness import ServerThread

from genpix.io.upscaler_file import save_upscaler
from genpix.models.rrdbnet import RRDBNet, RRDBNetConfig
from genpix.models.srvgg import SRVGGNetCompact, SRVGGNetConfig
from genpix.server import create_app


@pytest.fixture(scope="module")
def upscalers(tmp_path_factory):
    root = tmp_path_factory.mktemp("extras")
    torch.manual_seed(0)
    save_upscaler(SRVGGNetCompact(SRVGGNetConfig(scale=2, channels=3, num_features=8, num_conv=1)),
                  root / "ESRGAN" / "compact-x2.pth")
    net = RRDBNet(RRDBNetConfig(scale=4, channels=3, num_features=8, num_blocks=1, growth_channels=4))
    save_upscaler(net, root / "ESRGAN" / "4x_tiny.safetensors")
    (root / "models").mkdir()
    return root


@pytest.fixture(scope="module")
def server(upscalers):
    with ServerThread(create_app(models_dir=upscalers / "models", upscalers_dir=upscalers / "ESRGAN")) as url:
        yield url


@pytest.fixture(scope="module")
def api(server):
    host, port = server.removeprefix("http://").split(":")
    return webuiapi.WebUIApi(host=host, port=int(port))


def _picture(w=24, h=16, text=None):
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    if text:
        meta = PngImagePlugin.PngInfo()
        meta.add_text("parameters", text)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", pnginfo=meta)
        image = Image.open(io.BytesIO(buffer.getvalue()))
    return image


def test_upscalers_list_has_sd_webui_shape(server, api):
    items = requests.get(f"{server}/sdapi/v1/upscalers", timeout=30).json()
    assert [i["name"] for i in items] == ["None", "Lanczos", "Nearest", "4x_tiny", "compact-x2"]
    assert items[0] == {"name": "None", "model_name": None, "model_path": None, "model_url": None, "scale": 4}
    tiny = items[3]
    assert tiny["model_name"] == "ESRGAN" and tiny["scale"] == 4 and tiny["model_path"].endswith("4x_tiny.safetensors")
    assert [u["name"] for u in api.get_upscalers()] == [i["name"] for i in items]
    modes = requests.get(f"{server}/sdapi/v1/latent-upscale-modes", timeout=30).json()
    assert modes == [{"name": n} for n in ("Latent", "Latent (antialiased)", "Latent (bicubic)",
                                           "Latent (bicubic antialiased)", "Latent (nearest)",
                                           "Latent (nearest-exact)")]
    real = requests.get(f"{server}/sdapi/v1/realesrgan-models", timeout=30).json()
    assert sorted(r["name"] for r in real) == ["4x_tiny", "compact-x2"]
    assert {r["name"]: r["scale"] for r in real} == {"4x_tiny": 4, "compact-x2": 2}


def test_extra_single_image_with_a_model(api):
    result = api.extra_single_image(_picture(text="a cat\nSteps: 20"), upscaler_1="4x_tiny", upscaling_resize=4)
    assert result.image.size == (96, 64)
    assert result.image.info["parameters"] == "a cat\nSteps: 20"
    assert result.image.info["postprocessing"] == "Postprocess upscale by: 4, Postprocess upscaler: 4x_tiny"
    assert "Postprocess upscaler: 4x_tiny" in result.info


def test_extra_batch_images_scale_to(api):
    result = api.extra_batch_images([_picture(), _picture(20, 20)], upscaler_1="compact-x2", resize_mode=1,
                                    upscaling_resize_w=40, upscaling_resize_h=30)
    assert [im.size for im in result.images] == [(40, 30), (40, 30)]
    assert "Postprocess crop to: 40x30" in result.info


def _post(server, path, body):
    return requests.post(f"{server}/sdapi/v1/{path}", json=body, timeout=60)


def _b64(image):
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


@pytest.mark.parametrize("body,status,detail", [
    ({"upscaler_1": "nope"}, 400, "unknown upscaler 'nope'"),
    ({"upscaling_resize": 9}, 422, None),
    ({"upscaling_resize": 0.5}, 422, None),
    ({"extras_upscaler_2_visibility": 2}, 422, None),
    ({"resize_mode": 2}, 422, None),
    ({"resize_mode": 1, "upscaler_1": "Lanczos", "upscaling_resize_w": 100000, "upscaling_resize_h": 100000},
     413, "limit"),
    ({"image": "not base64!"}, 400, "base64"),
])
def test_extras_validation(server, body, status, detail):
    response = _post(server, "extra-single-image", {"image": _b64(_picture()), **body})
    assert response.status_code == status, response.text
    if detail:
        assert detail in response.json()["detail"]


def test_batch_needs_image_list(server):
    assert _post(server, "extra-batch-images", {"upscaler_1": "Lanczos"}).status_code == 422


def test_face_restoration_fields_are_named_as_ignored(server):
    body = {"image": _b64(_picture()), "upscaler_1": "Nearest", "upscaling_resize": 2, "gfpgan_visibility": 0.5}
    r = _post(server, "extra-single-image", body)
    assert r.status_code == 200 and "ignored: gfpgan_visibility (genpix has no face restorer)" in r.json()["html_info"]
    plain = _post(server, "extra-single-image", {**body, "gfpgan_visibility": 0})
    assert "ignored" not in plain.json()["html_info"]


def test_extras_check_counts_and_sizes_before_decoding(upscalers):
    from genpix.server.limits import Limits

    app = create_app(models_dir=upscalers / "models", upscalers_dir=upscalers / "ESRGAN",
                     limits=Limits(max_images=2, max_input_pixels=1000))
    with ServerThread(app) as url:
        many = {"imageList": [{"data": _b64(_picture()), "name": str(i)} for i in range(3)], "upscaler_1": "Nearest"}
        assert _post(url, "extra-batch-images", many).status_code == 413
        big = {"image": _b64(_picture(64, 64)), "upscaler_1": "Nearest"}  # 4096 pixels > 1000
        r = _post(url, "extra-single-image", big)
        assert r.status_code == 413 and "--max-pixels" in r.json()["detail"]
