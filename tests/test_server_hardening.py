"""`genpix serve` against an attacker and a careless user (issue 21, items 1-8): limits checked before
decoding, bodies counted as they stream, a bounded queue, trusted hosts and origins, auth on every
route, no server paths in errors, only five picture formats, no 500s for odd input, a full disk, a
refused model switch, graceful shutdown."""

import base64
import errno
import http.client
import io
import json
import re
import signal
import subprocess
import sys
import threading
import time

import pytest
import requests
from PIL import Image, PngImagePlugin
from server_harness import ServerThread, free_port

from genpix.server import create_app
from genpix.server.limits import Limits
from genpix.server.paths import inside_folder, redact_paths

VAE = {"sd_model_checkpoint": "fashion-vae"}


def b64_png(image: Image.Image, **save) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format=save.pop("format", "PNG"), **save)
    return base64.b64encode(buffer.getvalue()).decode()


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("hardening") / "models"
    (root / "broken").mkdir(parents=True)
    (root / "broken" / "config.json").write_text("{not json")
    return root


@pytest.fixture(scope="module")
def server(models):
    with ServerThread(create_app(models_dir=models)) as url:
        yield url


def post(url, path, body, **kwargs):
    return requests.post(f"{url}/sdapi/v1/{path}", json=body, timeout=60, **kwargs)


def current_model(url) -> str:
    return requests.get(f"{url}/sdapi/v1/options", timeout=10).json()["sd_model_checkpoint"]


# --- item 1 and 3: limits, counts before decoding ----------------------------------------------------


def test_init_image_count_is_checked_before_any_decoding(server):
    tiny = b64_png(Image.new("L", (8, 8)))
    r = post(server, "img2img", {"init_images": [tiny, tiny, "not base64!"], "batch_size": 1,
                                 "override_settings": VAE})
    assert r.status_code == 400 and "got 3 init images for batch_size 1" in r.json()["detail"]


def test_decoded_size_of_all_pictures_is_checked_from_their_headers():
    big = b64_png(Image.new("L", (2048, 2048)))  # 4 megapixels each, a few kB as PNG
    app = create_app(limits=Limits(max_input_pixels=6_000_000))
    with ServerThread(app) as url:
        r = post(url, "img2img", {"init_images": [big, big], "batch_size": 2, "override_settings": VAE})
    assert r.status_code == 413 and "8388608" in r.json()["detail"] and "--max-pixels" in r.json()["detail"]


@pytest.mark.parametrize("body, flag", [
    ({"prompt": "a" * 10_001}, "--max-prompt-length"),
    ({"negative_prompt": "a" * 10_001}, "--max-prompt-length"),
    ({"steps": 151}, "--max-steps"),
    ({"batch_size": 64, "n_iter": 13}, "--max-images"),
    ({"width": 4096, "height": 4096, "batch_size": 8}, "--max-pixels"),
])
def test_request_limits_have_sd_webui_defaults_and_name_their_flag(server, body, flag):
    r = post(server, "txt2img", {**body, "override_settings": VAE})
    assert r.status_code == 413 and flag in r.json()["detail"], r.text
    r = post(server, "txt2img", {"steps": 150, "batch_size": 8, "override_settings": VAE})  # sd-webui's UI maxima
    assert r.status_code == 200 and len(r.json()["images"]) == 8


# --- item 2: a chunked body is counted as it streams -------------------------------------------------


def test_chunked_body_over_the_limit_is_refused(monkeypatch):
    monkeypatch.setattr("genpix.server.app.MAX_BODY_BYTES", 1 << 20)
    with ServerThread(create_app()) as url:
        connection = http.client.HTTPConnection("127.0.0.1", int(url.rsplit(":", 1)[1]), timeout=30)
        chunks = (b'{"prompt": "' + b"a" * (1 << 16) for _ in range(40))  # 2.5 MB, no Content-Length
        try:
            connection.request("POST", "/sdapi/v1/txt2img", body=chunks, encode_chunked=True,
                               headers={"Content-Type": "application/json"})
        except (BrokenPipeError, ConnectionResetError):  # the server may answer before the body is sent
            pass
        response = connection.getresponse()
        assert response.status == 413 and json.loads(response.read())["error"] == "PayloadTooLarge"
        connection.close()


# --- the bounded queue --------------------------------------------------------------------------------


def test_a_full_queue_answers_503_with_retry_after():
    app = create_app(limits=Limits(queue_size=1))
    catalog = app.state.context.catalog
    release, started, load = threading.Event(), threading.Event(), catalog.pipeline

    def slow_pipeline(entry):
        started.set()
        release.wait(30)
        return load(entry)

    catalog.pipeline = slow_pipeline
    with ServerThread(app) as url:
        answers = []
        threads = [threading.Thread(target=lambda: answers.append(post(url, "txt2img", {"override_settings": VAE})))
                   for _ in range(2)]
        threads[0].start()
        assert started.wait(30)
        threads[1].start()  # waits behind the first: the queue is now full
        while app.state.context.jobs.progress()[2]["queued"] < 1:
            time.sleep(0.01)
        r = post(url, "txt2img", {"override_settings": VAE})
        assert r.status_code == 503 and r.headers["Retry-After"] == "5" and "queue is full" in r.json()["detail"]
        release.set()
        for thread in threads:
            thread.join(60)
        assert [a.status_code for a in answers] == [200, 200]


# --- item 4: hosts, origins, content types ---------------------------------------------------------------


def test_dns_rebinding_host_is_refused_on_loopback(server):
    r = requests.get(f"{server}/sdapi/v1/options", headers={"Host": "attacker.example:7860"}, timeout=10)
    assert r.status_code == 400 and r.json()["error"] == "UntrustedHost"
    port = server.rsplit(":", 1)[1]
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}"):
        assert requests.get(f"{server}/sdapi/v1/options", headers={"Host": host}, timeout=10).status_code == 200
    with ServerThread(create_app(host="0.0.0.0", api_auth="a:b")) as url:  # bound beyond loopback: any name
        r = requests.get(f"{url}/sdapi/v1/options", headers={"Host": "genpix.lan"}, auth=("a", "b"), timeout=10)
        assert r.status_code == 200


@pytest.mark.parametrize("path", ["interrupt", "skip", "refresh-checkpoints", "options"])
def test_cross_site_simple_requests_are_refused(server, path):
    r = requests.post(f"{server}/sdapi/v1/{path}", data="{}", timeout=10,
                      headers={"Origin": "http://attacker.example", "Content-Type": "text/plain"})
    assert r.status_code == 403 and "--cors-allow-origins" in r.json()["detail"]
    r = requests.post(f"{server}/sdapi/v1/{path}", data="{}", headers={"Content-Type": "text/plain"}, timeout=10)
    assert r.status_code == 415  # no Origin (an old browser, a plugin): still not a JSON request
    same = requests.post(f"{server}/sdapi/v1/{path}", json={}, timeout=10,
                         headers={"Origin": server, "Content-Type": "application/json"})
    assert same.status_code == 200  # the web UI's own requests


def test_cors_allow_origins_admits_the_named_origin():
    with ServerThread(create_app(cors_allow_origins=("http://localhost:3000",))) as url:
        allowed = {"Origin": "http://localhost:3000"}
        r = requests.options(f"{url}/sdapi/v1/txt2img", timeout=10, headers={
            **allowed, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"})
        assert r.status_code == 200 and r.headers["Access-Control-Allow-Origin"] == "http://localhost:3000"
        r = requests.get(f"{url}/sdapi/v1/samplers", headers=allowed, timeout=10)
        assert r.status_code == 200 and r.headers["Access-Control-Allow-Origin"] == "http://localhost:3000"
        r = requests.get(f"{url}/sdapi/v1/samplers", headers={"Origin": "http://localhost:3001"}, timeout=10)
        assert r.status_code == 403


# --- item 8: auth everywhere, UTF-8 credentials, the exposure warning ---------------------------------------


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def every_route(app, prefix: str = "") -> list[tuple[str, str]]:
    """(method, path) of every route in the app's own table (routers included), path parameters filled in."""
    found = []
    for route in app.routes:
        if hasattr(route, "original_router"):  # FastAPI's included router
            found += every_route(route.original_router, prefix + route.include_context.prefix)
            continue
        path = prefix + re.sub(r"\{[^}]+\}", "x", route.path)
        found += [(method, path) for method in sorted(getattr(route, "methods", None) or {"GET"})]
    return found


def test_every_route_of_the_app_needs_credentials():
    app = create_app(api_auth="jürgen:pässwört")
    routes = every_route(app)
    assert ("GET", "/openapi.json") in routes and ("POST", "/sdapi/v1/txt2img") in routes and len(routes) > 20
    with ServerThread(app) as url:
        for method, path in routes:
            r = requests.request(method, url + path, json={}, timeout=10)
            assert r.status_code == 401, (method, path, r.status_code)
        r = requests.get(f"{url}/openapi.json", headers=basic("jürgen", "pässwört"), timeout=10)
        assert r.status_code == 200 and r.json()["info"]["title"] == "genpix"
        assert requests.get(f"{url}/", headers=basic("jürgen", "wrong"), timeout=10).status_code == 401


def test_listening_beyond_loopback_without_auth_warns(run_cli, monkeypatch):
    import uvicorn

    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets=None: None)
    status, out, err = run_cli("serve", "--host", "0.0.0.0", "--port", "0")
    assert status == 0 and err.startswith("genpix: warning: listening on 0.0.0.0 without --api-auth")
    status, out, err = run_cli("serve", "--host", "0.0.0.0", "--port", "0", "--api-auth", "a:b")
    assert status == 0 and "warning" not in err
    status, out, err = run_cli("serve", "--port", "0")
    assert status == 0 and "warning" not in err


def test_symlinks_out_of_the_models_folder_are_not_inside(tmp_path):
    (tmp_path / "models").mkdir()
    (tmp_path / "secret.safetensors").write_bytes(b"x")
    (tmp_path / "models" / "link.safetensors").symlink_to(tmp_path / "secret.safetensors")
    (tmp_path / "models" / "own.safetensors").write_bytes(b"x")
    (tmp_path / "models" / "alias.safetensors").symlink_to(tmp_path / "models" / "own.safetensors")
    assert not inside_folder(tmp_path / "models", tmp_path / "models" / "link.safetensors")
    assert inside_folder(tmp_path / "models", tmp_path / "models" / "alias.safetensors")


def test_errors_name_no_absolute_server_path(server, models):
    r = post(server, "txt2img", {"override_settings": {"sd_model_checkpoint": "broken"}})
    detail = r.json()["detail"]
    assert r.status_code == 400 and "broken/" in detail and str(models) not in detail, detail
    assert redact_paths("cannot read /srv/a/b.ckpt") == "cannot read b.ckpt"
    assert redact_paths("see /sdapi/v1/img2img") == "see /sdapi/v1/img2img"


# --- item 7 and the picture formats: 4xx, never a 500 --------------------------------------------------


@pytest.mark.parametrize("kind", ["TIFF", "ICO", "PCX", "TGA"])
def test_only_five_picture_formats_are_opened(server, kind):
    picture = b64_png(Image.new("RGB", (8, 8)), format=kind)
    r = post(server, "png-info", {"image": picture})
    assert r.status_code == 400 and "PNG, JPEG, WEBP, BMP, GIF" in r.json()["detail"]
    for allowed in ("PNG", "JPEG", "WEBP", "BMP", "GIF"):
        assert post(server, "png-info", {"image": b64_png(Image.new("RGB", (8, 8)), format=allowed)}).ok


@pytest.mark.parametrize("path, raw", [
    ("txt2img", b'{"subseed_strength": NaN, "override_settings": {"sd_model_checkpoint": "fashion-vae"}}'),
    ("txt2img", b'{"subseed_strength": -Infinity, "override_settings": {"sd_model_checkpoint": "fashion-vae"}}'),
    ("img2img", b'{"init_images": ["x"], "script_name": "poor man\'s outpainting", "script_args": [Infinity]}'),
])
def test_non_finite_json_numbers_are_a_400(server, path, raw):
    r = requests.post(f"{server}/sdapi/v1/{path}", data=raw, headers={"Content-Type": "application/json"},
                      timeout=10)
    assert r.status_code == 400 and "is not a JSON number" in r.json()["detail"], r.text


def test_png_with_an_oversize_text_chunk_is_a_400(server):
    meta = PngImagePlugin.PngInfo()
    meta.add_text("parameters", "a" * (PngImagePlugin.MAX_TEXT_CHUNK + 1), zip=True)  # small compressed
    r = post(server, "png-info", {"image": b64_png(Image.new("L", (8, 8)), pnginfo=meta)})
    assert r.status_code == 400 and "not a readable image" in r.json()["detail"]


def test_a_full_disk_under_outputs_dir_still_returns_the_images(tmp_path, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("genpix.server.outputs.save_png", full)
    with ServerThread(create_app(outputs_dir=tmp_path)) as url:
        r = post(url, "txt2img", {"seed": 3, "batch_size": 2, "override_settings": VAE})
    assert r.status_code == 200 and len(r.json()["images"]) == 2
    assert "No space left on device" in json.loads(r.json()["info"])["warnings"][0]


# --- item 5: a refused request does not switch the shared model ------------------------------------------


def test_refused_request_with_restore_false_keeps_the_current_model(server):
    before = current_model(server)
    assert not before.startswith("fashion-vae")
    r = post(server, "txt2img", {"width": 64, "height": 64, "override_settings": VAE,
                                 "override_settings_restore_afterwards": False})
    assert r.status_code == 400 and current_model(server) == before
    r = post(server, "txt2img", {"steps": 10_000, "override_settings": VAE,
                                 "override_settings_restore_afterwards": False})
    assert r.status_code == 422 and current_model(server) == before
    r = post(server, "txt2img", {"override_settings": VAE, "override_settings_restore_afterwards": False})
    assert r.status_code == 200 and current_model(server).startswith("fashion-vae")  # a success does switch
    requests.post(f"{server}/sdapi/v1/options", json={"sd_model_checkpoint": before}, timeout=60)


# --- item 6: SIGINT/SIGTERM while a job runs ------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_during_a_job_answers_and_exits(sig):
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "genpix", "serve", "--port", str(port), "--model",
                                "fashion-ddpm"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        assert "serving on" in process.stdout.readline()
        _wait_until_up(url)
        box = []
        job = threading.Thread(target=lambda: box.append(post(url, "txt2img", {"steps": 150, "batch_size": 8,
                                                                                "n_iter": 100})))
        job.start()
        while requests.get(f"{url}/sdapi/v1/progress", timeout=10).json()["state"]["sampling_step"] < 1:
            time.sleep(0.05)
        process.send_signal(sig)
        job.join(30)
        assert box and box[0].status_code == 503 and "shutting down" in box[0].json()["detail"]
        process.wait(30)  # exits (uvicorn re-raises the signal once it has shut down)
    finally:
        process.kill()
        process.wait(10)


def _wait_until_up(url: str) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            requests.get(f"{url}/sdapi/v1/options", timeout=5)
            return
        except requests.ConnectionError:
            assert time.monotonic() < deadline
            time.sleep(0.1)
