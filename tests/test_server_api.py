"""`genpix serve`'s /sdapi/v1 API on a real uvicorn server, driven by the real `webuiapi` client
(and raw HTTP for the error cases): the bundled fashion-vae and a tiny class-conditional ddpm."""

import base64
import http.client
import io
import json
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import requests
import webuiapi
from PIL import Image
from server_harness import ServerThread, free_port, train_tiny_class_model

import genpix
from genpix.diffusion import samplers
from genpix.server import create_app


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("server")
    models = root / "models"
    train_tiny_class_model(models)
    return models, root / "outputs"


@pytest.fixture(scope="module")
def server(model_dirs):
    models, outputs = model_dirs
    with ServerThread(create_app(models_dir=models, outputs_dir=outputs)) as url:
        yield url


@pytest.fixture(scope="module")
def api(server):
    port = int(server.rsplit(":", 1)[1])
    return webuiapi.WebUIApi(host="127.0.0.1", port=port, sampler="DDIM", steps=3)


def titles(api):
    return {t.split(" [")[0]: t for t in api.util_get_model_names()}


def post(url, path, body, **kwargs):
    return requests.post(f"{url}/sdapi/v1/{path}", json=body, timeout=60, **kwargs)


def test_models_and_switching_with_the_client(api, model_dirs):
    names = titles(api)
    assert {"fashion-vae", "digits-ddpm"} <= set(names)
    entry = next(m for m in api.get_sd_models() if m["model_name"] == "digits-ddpm")
    assert entry["hash"] == entry["sha256"][:10] and entry["filename"].endswith("model.safetensors")
    assert api.util_get_current_model().startswith("emoji-ldm [")  # the bundled text-to-image model
    api.util_set_model("digits-ddpm")  # the client lowercases and matches the closest title
    assert api.util_get_current_model() == names["digits-ddpm"]
    assert api.get_options()["sd_checkpoint_hash"] == entry["sha256"]
    api.util_set_model(names["fashion-vae"])
    assert api.util_get_current_model() == names["fashion-vae"]


def test_txt2img_class_prompt_matches_the_pipeline(api, model_dirs):
    api.util_set_model("digits-ddpm")
    result = api.txt2img(prompt="7", seed=3, steps=3, sampler_name="DDIM", cfg_scale=2, width=8, height=8,
                         batch_size=2, n_iter=2)
    assert len(result.images) == 4 and all(im.size == (8, 8) for im in result.images)
    assert result.info["all_seeds"] == [3, 4, 5, 6] and result.info["seed"] == 3
    assert result.info["steps"] == 3 and result.info["sampler_name"] == "DDIM" and result.info["cfg_scale"] == 2
    assert result.parameters["prompt"] == "7"
    for image, text in zip(result.images, result.info["infotexts"]):
        assert image.info["parameters"] == text and text.startswith("7\n") and "Class: 7" in text
    pipe = genpix.load_pipeline(str(model_dirs[0] / "digits-ddpm"))
    second = pipe(n=2, seed=5, steps=3, sampler="DDIM", cfg_scale=2.0, class_name="7", eta=1.0)  # webuiapi's eta
    for got, want in zip(result.images[2:], second.images):
        assert np.array_equal(np.asarray(got), np.asarray(want))  # batch 2 = seeds 5, 6, as the pipeline makes them


def test_random_seed_is_reported_and_legacy_sampler_names_work(api):
    api.util_set_model("digits-ddpm")
    result = api.txt2img(prompt="", seed=-1, steps=2, sampler_name="Euler Karras", width=8, height=8, batch_size=2)
    seeds = result.info["all_seeds"]
    assert result.parameters["seed"] == -1 and seeds[0] >= 0 and seeds[1] == seeds[0] + 1
    text = result.info["infotexts"][0]  # webuiapi's eta=1 is left out: Euler takes no eta
    assert "schedule type: karras" in text.lower() and "Sampler: Euler," in text


def test_vae_ignores_diffusion_fields_and_saves_outputs(api, model_dirs):
    api.util_set_model("fashion-vae")
    result = api.txt2img(seed=11, steps=37, sampler_name="Euler a", cfg_scale=9, width=28, height=28, batch_size=3)
    assert [im.size for im in result.images] == [(28, 28)] * 3 and result.info["all_seeds"] == [11, 12, 13]
    want = genpix.load_pipeline("fashion-vae")(n=3, seed=11)
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(result.images, want.images))
    saved = sorted((model_dirs[1] / "txt2img-images").glob("*-11.png"))
    assert saved and Image.open(saved[-1]).info["parameters"] == result.info["infotexts"][0]


def test_img2img_with_the_client(api):
    api.util_set_model("digits-ddpm")
    init = Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8) * 4, mode="L")
    same = api.img2img(images=[init], denoising_strength=0.0, steps=4, seed=1, width=8, height=8)
    assert np.array_equal(np.asarray(same.image), np.asarray(init))  # strength 0 returns the image
    big = Image.new("RGB", (40, 24), (200, 30, 30))  # converted to 1 channel, resized to 8x8
    changed = api.img2img(images=[big], prompt="3", denoising_strength=0.6, steps=5, seed=2, width=8,
                          height=8, batch_size=2)
    assert [im.size for im in changed.images] == [(8, 8)] * 2
    assert changed.info["denoising_strength"] == 0.6 and "Denoising strength: 0.6" in changed.info["infotexts"][0]
    assert changed.parameters["init_images"] is None  # include_init_images is off


def test_png_info_samplers_schedulers_memory_scripts(api, server):
    api.util_set_model("fashion-vae")
    image = api.txt2img(seed=4, width=28, height=28).image
    info = api.png_info(image)
    assert info.info.startswith("Seed: 4") and info.json["parameters"]["Model"] == "fashion-vae"
    assert api.util_get_sampler_names() == sorted(samplers.names())  # the registry, read per request
    assert {"automatic", "karras"} <= set(api.util_get_scheduler_names())
    assert api.get_memory()["ram"]["total"] > 0
    assert api.get_scripts() == {"txt2img": ["x/y/z plot"], "img2img": ["outpainting mk2", "poor man's outpainting"]}
    progress = api.get_progress()
    assert progress["progress"] == 0 and progress["state"]["job_count"] == 0
    assert api.skip() is None and api.interrupt() == {}


def _wait_for(url, condition, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        progress = requests.get(f"{url}/sdapi/v1/progress", timeout=10).json()
        if condition(progress):
            return progress
        time.sleep(0.02)
    raise AssertionError("the job never reached the awaited state")


def _in_background(fn):
    box = {}
    thread = threading.Thread(target=lambda: box.setdefault("result", fn()), daemon=True)
    thread.start()
    return thread, box


LONG_JOB = {"prompt": "5", "steps": 40, "sampler_name": "Euler a", "width": 8, "height": 8,
            "batch_size": 8, "n_iter": 50, "override_settings": {"sd_model_checkpoint": "digits-ddpm"}}


def test_interrupt_during_a_job_keeps_finished_batches(api, server):
    thread, box = _in_background(lambda: post(server, "txt2img", {**LONG_JOB, "seed": 0}))
    running = _wait_for(server, lambda p: p["state"]["job_no"] >= 1 and p["current_image"])
    assert 0 < running["progress"] < 1 and running["state"]["job_count"] == 50
    preview = Image.open(io.BytesIO(base64.b64decode(running["current_image"])))
    assert preview.size == (8, 8)
    assert api.interrupt() == {}
    thread.join(60)
    response = box["result"]
    assert response.status_code == 200
    info = json.loads(response.json()["info"])
    assert info["interrupted"] and 8 <= len(response.json()["images"]) < 50 * 8
    assert len(info["all_seeds"]) % 8 == 0 and info["all_seeds"][:2] == [0, 1]
    assert api.get_progress()["state"]["job"] == ""


def test_skip_drops_the_current_batch(api, server):
    job = {**LONG_JOB, "n_iter": 2, "seed": 100}
    thread, box = _in_background(lambda: post(server, "txt2img", job))
    _wait_for(server, lambda p: p["state"]["job_no"] == 0 and p["state"]["sampling_step"] >= 1)
    api.skip()
    thread.join(60)
    info = json.loads(box["result"].json()["info"])
    assert info["all_seeds"] == list(range(108, 116))  # only the second batch


def test_eight_parallel_requests_are_all_answered(server):
    def one(seed):
        return post(server, "txt2img", {"seed": seed, "override_settings": {"sd_model_checkpoint": "fashion-vae"}})

    results = [None] * 8
    threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, one(i * 10))) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert all(r.status_code == 200 for r in results)
    assert [json.loads(r.json()["info"])["seed"] for r in results] == [i * 10 for i in range(8)]


def test_a_client_that_disconnects_does_not_stop_the_server(server):
    body = json.dumps(LONG_JOB).encode()
    host, port = "127.0.0.1", int(server.rsplit(":", 1)[1])
    with socket.create_connection((host, port)) as s:
        s.sendall(b"POST /sdapi/v1/txt2img HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                  b"Content-Length: %d\r\n\r\n" % len(body) + body)
        left = _wait_for(server, lambda p: p["state"]["job"] == "txt2img")
    step = left["state"]["job_no"] * 40 + left["state"]["sampling_step"]
    # the job goes on after the client left, and the server answers meanwhile
    _wait_for(server, lambda p: p["state"]["job_no"] * 40 + p["state"]["sampling_step"] > step + 5)
    requests.post(f"{server}/sdapi/v1/interrupt", timeout=10)
    r = post(server, "txt2img", {"seed": 1, "override_settings": {"sd_model_checkpoint": "fashion-vae"}})
    assert r.status_code == 200 and len(r.json()["images"]) == 1


@pytest.mark.parametrize("path, body, status, detail", [
    ("txt2img", {"steps": "many"}, 422, "steps"),
    ("txt2img", {"steps": -1}, 422, "steps"),
    ("txt2img", {"width": 100000}, 422, "width"),
    ("txt2img", {"width": 0}, 422, "width"),
    ("txt2img", {"batch_size": 0}, 422, "batch_size"),
    ("txt2img", {"width": 64, "height": 64}, 400, "fashion-vae makes 28x28 images, not 64x64"),
    ("txt2img", {"prompt": "a cat"}, 400, "fashion-vae (vae) is unconditional: it takes no prompt"),
    ("txt2img", {"prompt": "sneaker", "override_settings": {"sd_model_checkpoint": "digits-ddpm"}}, 400,
     "unknown class 'sneaker'; this model knows: 0, 1, 2, 3, 4, 5, 6, 7, 8, 9"),
    ("txt2img", {"sampler_name": "Nope", "override_settings": {"sd_model_checkpoint": "digits-ddpm"}}, 400,
     "unknown sampler 'Nope'; choose one of: "),
    ("txt2img", {"scheduler": "nope", "sampler_name": "Euler",
                 "override_settings": {"sd_model_checkpoint": "digits-ddpm"}}, 400, "unknown schedule type 'nope'"),
    ("txt2img", {"override_settings": {"sd_model_checkpoint": "nope"}}, 404, "unknown model 'nope'; available: "),
    ("options", {"sd_model_checkpoint": "../../etc/passwd"}, 404, "unknown model '../../etc/passwd'"),
    ("options", {"samples_format": 3}, 422, "option 'samples_format' must be a str"),
    ("img2img", {"prompt": "1"}, 404, "Init image not found"),
    ("img2img", {"init_images": ["not base64!"]}, 400, "init_images[0] is not valid base64"),
    ("img2img", {"init_images": [base64.b64encode(b"plain text").decode()]}, 400, "not a readable image"),
    ("img2img", {"init_images": ["data:image/png;base64," + webuiapi.raw_b64_img(Image.new("L", (8, 8)))]},
     400, "fashion-vae (vae) cannot do img2img"),
    ("img2img", {"init_images": [webuiapi.raw_b64_img(Image.new("L", (8, 8)))],
                 "mask": webuiapi.raw_b64_img(Image.new("L", (8, 8), 255)), "inpainting_fill": 4,
                 "override_settings": {"sd_model_checkpoint": "digits-ddpm"}}, 422, "inpainting_fill"),
    ("png-info", {"image": "%%%"}, 400, "image is not valid base64"),
])
def test_bad_requests_get_json_errors(server, path, body, status, detail):
    if path != "options":
        body = {"override_settings": {"sd_model_checkpoint": "fashion-vae"}, **body}
    r = post(server, path, body)
    assert r.status_code == status, r.text
    assert detail in json.dumps(r.json()["detail"]) if status == 422 else detail in r.json()["detail"]
    if status != 422:
        assert set(r.json()) == {"error", "detail", "body", "errors"}


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_size_limits(server):
    huge = webuiapi.raw_b64_img(Image.new("L", (10000, 10000)))  # small as PNG, 100 megapixels as pixels
    r = post(server, "img2img", {"init_images": [huge], "override_settings": {"sd_model_checkpoint": "digits-ddpm"}})
    assert r.status_code == 413 and "largest side allowed is 4096" in r.json()["detail"]
    tiny = webuiapi.raw_b64_img(Image.new("L", (1, 1), 128))  # resized up to the model's 8x8
    r = post(server, "img2img", {"init_images": [tiny], "denoising_strength": 0, "steps": 2,
                                 "override_settings": {"sd_model_checkpoint": "digits-ddpm"}})
    assert r.status_code == 200 and Image.open(io.BytesIO(base64.b64decode(r.json()["images"][0]))).size == (8, 8)
    connection = http.client.HTTPConnection("127.0.0.1", int(server.rsplit(":", 1)[1]), timeout=10)
    connection.putrequest("POST", "/sdapi/v1/txt2img")  # a body too large is refused unread
    connection.putheader("Content-Length", "999999999")
    connection.endheaders()
    response = connection.getresponse()
    assert response.status == 413 and json.loads(response.read())["error"] == "PayloadTooLarge"
    connection.close()


def test_malformed_json_and_unknown_fields(server):
    r = requests.post(f"{server}/sdapi/v1/txt2img", data=b"{not json", timeout=10,
                      headers={"Content-Type": "application/json"})
    assert r.status_code == 422 and r.json()["detail"][0]["type"] == "json_invalid"
    r = post(server, "txt2img", {"seed": 2, "enable_hr": True, "hr_scale": 2, "an_extension_field": {"x": 1},
                                 "override_settings": {"sd_model_checkpoint": "fashion-vae"}})
    assert r.status_code == 200 and len(r.json()["images"]) == 1


def test_api_auth(model_dirs):
    app = create_app(api_auth="alice:secret,bob:hunter2")
    with ServerThread(app) as url:
        for auth in (None, ("alice", "wrong"), ("eve", "secret")):
            r = requests.get(f"{url}/sdapi/v1/options", auth=auth, timeout=10)
            assert r.status_code == 401 and r.json() == {"detail": "Incorrect username or password"}
            assert r.headers["WWW-Authenticate"] == "Basic"
        assert requests.get(f"{url}/", timeout=10).status_code == 401  # the UI too
        port = int(url.rsplit(":", 1)[1])
        client = webuiapi.WebUIApi(port=port, username="bob", password="hunter2")
        result = client.txt2img(seed=1, width=28, height=28,
                                override_settings={"sd_model_checkpoint": "fashion-vae"})
        assert len(result.images) == 1


def test_genpix_serve_command(model_dirs, run_cli):
    status, _, err = run_cli("serve", "--api-auth", "nocolon")
    assert status == 1 and err.strip() == "genpix: error: --api-auth: expected USER:PASS[,USER:PASS...], got 'nocolon'"
    status, _, err = run_cli("serve", "--model", "nope")
    assert status == 1 and "unknown model 'nope'; available: " in err and "fashion-vae [" in err
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "genpix", "serve", "--port", str(port), "--models-dir",
                                str(model_dirs[0]), "--model", "digits-ddpm"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert "serving on http://127.0.0.1:%d/" % port in process.stdout.readline()
        deadline = time.monotonic() + 30
        while True:
            try:
                page = requests.get(f"http://127.0.0.1:{port}/", timeout=5)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        assert page.status_code == 200 and "<title>genpix</title>" in page.text
        options = requests.get(f"http://127.0.0.1:{port}/sdapi/v1/options", timeout=5).json()
        assert options["sd_model_checkpoint"].startswith("digits-ddpm [")
    finally:
        process.terminate()
        process.wait(20)
