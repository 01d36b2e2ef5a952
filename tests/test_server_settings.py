"""Issue 18, server side: per-request settings (override_settings) and /options applied to later requests,
styles from --styles-file, /sd-vae, /cmd-flags, checkpoint unload/reload, and the live preview rendered once
per step, against a real `genpix serve` on loopback (tests/server_harness.py) with the real `webuiapi`
client where it has the method. Models: the tiny class-conditional ddpm (8x8) and the bundled shapes-ldm."""

import base64
import io
import json
import threading
import time

import numpy as np
import pytest
import requests
import webuiapi
from PIL import Image
from server_harness import ServerThread, train_tiny_class_model

from genpix.server import create_app
from genpix.server.limits import Limits
from genpix.server.options import DEFAULTS

DIGITS = {"sd_model_checkpoint": "digits-ddpm"}
STYLES = 'name,prompt,negative_prompt\nred,"{prompt}, red",blurry\nbig,large,"small, {prompt}"\n'


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("settings")
    train_tiny_class_model(root / "models")
    (root / "VAE").mkdir()
    (root / "VAE" / "soft.safetensors").write_bytes(b"not read until used")
    (root / "styles.csv").write_text(STYLES)
    app = create_app(models_dir=root / "models", vae_dir=root / "VAE", styles_file=root / "styles.csv",
                     limits=Limits(max_steps=1000))
    with ServerThread(app) as url:
        yield url, app.state.context, root


@pytest.fixture(scope="module")
def url(setup):
    return setup[0]


@pytest.fixture(scope="module")
def api(url):
    return webuiapi.WebUIApi(host="127.0.0.1", port=int(url.rsplit(":", 1)[1]))


def post(url, path, body):
    return requests.post(f"{url}/sdapi/v1/{path}", json=body, timeout=120)


def get(url, path):
    r = requests.get(f"{url}/sdapi/v1/{path}", timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


def digits(url, **fields):
    """One 8x8 digit with Euler a, 3 steps: (pixels, info)."""
    body = {"prompt": "3", "seed": 5, "steps": 3, "sampler_name": "Euler a", **fields}
    body["override_settings"] = {**DIGITS, **body.get("override_settings", {})}
    r = post(url, "txt2img", body)
    assert r.status_code == 200, r.text
    pixels = np.asarray(Image.open(io.BytesIO(base64.b64decode(r.json()["images"][0]))), dtype=np.int16)
    return pixels, json.loads(r.json()["info"])


def test_override_settings_apply_to_that_request_only(url):
    plain, info = digits(url)
    assert info["ignored"] == []
    delta, info = digits(url, override_settings={"eta_noise_seed_delta": 7})
    assert np.abs(delta - plain).max() > 0 and info["ignored"] == []
    assert np.array_equal(digits(url)[0], plain)  # restored after it
    eta0, _ = digits(url, override_settings={"eta_ancestral": 0.0})
    assert np.array_equal(eta0, digits(url, eta=0.0)[0]) and np.abs(eta0 - plain).max() > 0
    assert np.array_equal(digits(url, override_settings={"eta_ancestral": 1})[0], plain)  # the default
    _, info = digits(url, override_settings={"randn_source": "CPU"})
    assert info["ignored"] == []
    same, info = digits(url, override_settings={"randn_source": "GPU", "samples_format": "jpg"})
    assert info["ignored"] == ["override_settings.samples_format", "override_settings.randn_source"]
    assert np.array_equal(same, plain)


@pytest.mark.parametrize("override, message", [
    ({"eta_noise_seed_delta": "7"}, "'eta_noise_seed_delta' must be a int"),
    ({"eta_ancestral": -1}, "'eta_ancestral' must be at least 0"),
    ({"randn_source": "TPU"}, "'randn_source' must be one of GPU, CPU, NV"),
    ({"sd_vae": "nope.safetensors"}, "unknown VAE 'nope.safetensors'"),
])
def test_a_bad_override_is_refused_before_the_job(url, override, message):
    r = post(url, "txt2img", {"override_settings": {**DIGITS, **override},
                              "override_settings_restore_afterwards": False})
    assert r.status_code == 422 and message in r.json()["detail"]
    assert not get(url, "options")["sd_model_checkpoint"].startswith("digits-ddpm")  # nothing switched


def test_options_round_trip_and_apply_to_later_requests(url, api):
    plain, _ = digits(url)
    wanted = {"eta_noise_seed_delta": 7, "eta_ancestral": 0.5, "eta_ddim": 0.25, "randn_source": "NV",
              "CLIP_stop_at_last_layers": 2, "show_progress_every_n_steps": 3, "live_previews_enable": False,
              "sd_vae": "soft.safetensors", "return_grid": True}
    api.set_options({**wanted, "no_such_option": 1})
    got = api.get_options()
    assert {k: got[k] for k in wanted} == wanted and "no_such_option" not in got
    later, info = digits(url)
    per_request, _ = digits(url, override_settings={"eta_noise_seed_delta": 7, "eta_ancestral": 0.5})
    assert np.array_equal(later, per_request) and np.abs(later - plain).max() > 0
    assert info["ignored"] == ["randn_source", "sd_vae", "clip_skip"]  # no CLIP, no VAE file for a ddpm
    r = post(url, "options", {"eta_noise_seed_delta": 1, "randn_source": "TPU"})  # one bad value: nothing set
    assert r.status_code == 422 and api.get_options()["eta_noise_seed_delta"] == 7
    api.set_options(DEFAULTS)
    assert np.array_equal(digits(url)[0], plain)


def test_styles_from_the_styles_file(url, api):
    assert api.get_prompt_styles() == [{"name": "red", "prompt": "{prompt}, red", "negative_prompt": "blurry"},
                                       {"name": "big", "prompt": "large", "negative_prompt": "small, {prompt}"}]
    body = {"prompt": "a circle", "negative_prompt": "square", "seed": 3, "steps": 2, "width": 32, "height": 32}
    styled = post(url, "txt2img", {**body, "styles": ["red", "big", "nope"]}).json()
    info = json.loads(styled["info"])
    assert info["prompt"] == "a circle, red, large" and info["all_prompts"] == ["a circle, red, large"]
    assert info["negative_prompt"] == "small, square, blurry" and info["styles"] == ["red", "big", "nope"]
    assert info["ignored"] == ["styles.nope"]  # sd-webui skips an unknown style; genpix names it
    by_hand = post(url, "txt2img", {**body, "prompt": "a circle, red, large",
                                    "negative_prompt": "small, square, blurry"}).json()
    assert styled["images"] == by_hand["images"]


def test_vae_list_refresh_cmd_flags_and_empty_lists(setup, api):
    url, _, root = setup
    assert api.get_sd_vae() == [{"model_name": "soft.safetensors",
                                 "filename": str((root / "VAE" / "soft.safetensors").resolve())}]
    (root / "VAE" / "sub").mkdir(exist_ok=True)
    (root / "VAE" / "sub" / "sharp.pt").write_bytes(b"x")
    assert len(api.get_sd_vae()) == 1
    assert post(url, "refresh-vae", {}).status_code == 200
    assert [v["model_name"] for v in api.get_sd_vae()] == ["soft.safetensors", "sharp.pt"]
    flags = api.get_cmd_flags()
    assert flags["vae_dir"] == str(root / "VAE") and flags["styles_file"] == str(root / "styles.csv")
    assert flags["api_auth"] is False and flags["models_dir"] == str(root / "models")
    assert api.get_face_restorers() == [] and api.get_hypernetworks() == []  # genpix has none of either


def test_unload_and_reload_checkpoint(setup, url):
    _, ctx, _ = setup
    digits(url)
    assert post(url, "unload-checkpoint", {}).status_code == 200 and not ctx.catalog._loaded
    assert post(url, "reload-checkpoint", {}).status_code == 200
    assert list(ctx.catalog._loaded)[0].startswith(ctx.options.model.sha256)


def poll_while(url, job_thread, **params):
    """Every /progress answer while the job runs."""
    answers = []
    while job_thread.is_alive():
        answers.append(requests.get(f"{url}/sdapi/v1/progress", params=params, timeout=60).json())
        time.sleep(0.005)
    return answers


def run_in_thread(url, body):
    thread = threading.Thread(target=post, args=(url, "txt2img", body))
    thread.start()
    return thread


def test_live_preview_is_rendered_once_per_step(setup, url, api):
    """Two pollers: each step's preview is rendered at most once (fewer renders than previews answered,
    at most one per step), at the model's size; none with skip_current_image or between every N steps."""
    _, ctx, _ = setup
    body = {"prompt": "3", "seed": 1, "steps": 100, "n_iter": 2, "sampler_name": "Euler", "override_settings": DIGITS}
    digits(url)  # loaded before
    before = ctx.jobs.renders
    job = run_in_thread(url, body)
    other = []
    second = threading.Thread(target=lambda: other.extend(poll_while(url, job)))
    second.start()
    answers = poll_while(url, job)
    second.join()
    shown = [a for a in answers + other if a["current_image"]]
    renders = ctx.jobs.renders - before
    assert 0 < renders < len(shown) and renders <= 200
    assert all(Image.open(io.BytesIO(base64.b64decode(a["current_image"]))).size == (8, 8) for a in shown[::20])
    assert not any(a["current_image"] for a in poll_while(url, run_in_thread(url, body), skip_current_image=True))
    api.set_options({"show_progress_every_n_steps": 25})
    before = ctx.jobs.renders
    answers = poll_while(url, run_in_thread(url, body))
    api.set_options({"show_progress_every_n_steps": 1})
    assert any(a["current_image"] for a in answers) and ctx.jobs.renders - before <= 8
    first = [a for a in answers if a["state"]["sampling_step"] < 25 and a["state"]["job_no"] == 0]
    assert not any(a["current_image"] for a in first)


def xyz_args(x_type, x_values, y_type=0, y_values="", lone=True):
    """sd-webui 1.10's 18 X/Y/Z script_args."""
    return [x_type, x_values, [], y_type, y_values, [], 0, "", [], True, lone, False, False, False, False, False, 0,
            False]


def test_xyz_plot_through_the_api(url, api):
    assert "x/y/z plot" in api.get_scripts()["txt2img"]
    body = {"prompt": "3", "seed": 5, "steps": 3, "sampler_name": "Euler a", "override_settings": DIGITS,
            "script_name": "X/Y/Z plot", "script_args": xyz_args(4, "2-3", 1, "5, 6")}  # 4 Steps, 1 Seed
    r = post(url, "txt2img", body)
    assert r.status_code == 200, r.text
    images = [Image.open(io.BytesIO(base64.b64decode(b))) for b in r.json()["images"]]
    info = json.loads(r.json()["info"])
    assert len(images) == 5 and images[0].width > 2 * 128 and images[0].height > 2 * 128  # the labelled grid
    assert info["all_seeds"] == [5, 5, 6, 6] and info["index_of_first_image"] == 1
    for picture, (steps, seed) in zip(images[1:], [(2, 5), (3, 5), (2, 6), (3, 6)]):
        alone, _ = digits(url, steps=steps, seed=seed)
        assert np.array_equal(np.asarray(picture, dtype=np.int16), alone)
    grid_only = post(url, "txt2img", {**body, "script_args": xyz_args("Steps", "2,3", lone=False)}).json()
    assert len(grid_only["images"]) == 1
    r = post(url, "txt2img", {**body, "script_args": xyz_args(13, "0,1")})  # Sigma Churn: not in genpix
    assert r.status_code == 422 and "'Sigma Churn' is not implemented" in r.json()["detail"]
    r = post(url, "txt2img", {**body, "script_args": xyz_args(11, "digits-ddpm, nope")})
    assert r.status_code == 404 and "unknown model 'nope'" in r.json()["detail"]


def test_settings_kept_only_after_a_successful_request_without_restore(url, api):
    plain, _ = digits(url)
    model = api.get_options()["sd_model_checkpoint"]
    keep = {"override_settings": {"eta_noise_seed_delta": 9}, "override_settings_restore_afterwards": False}
    refused = {**keep, "sampler_name": "Nope", "override_settings": {**DIGITS, "eta_noise_seed_delta": 9}}
    r = post(url, "txt2img", refused)
    assert api.get_options()["sd_model_checkpoint"] == model
    assert r.status_code == 400 and api.get_options()["eta_noise_seed_delta"] == 0  # refused: nothing kept
    kept, _ = digits(url, **keep)
    assert api.get_options()["eta_noise_seed_delta"] == 9  # as sd-webui: the override stays
    assert np.array_equal(digits(url)[0], kept) and np.abs(kept - plain).max() > 0
    assert api.get_options()["sd_model_checkpoint"].startswith("digits-ddpm [")
    api.set_options({"eta_noise_seed_delta": 0, "sd_model_checkpoint": model})


def test_cmd_flags_of_genpix_serve():
    from genpix.cli import build_parser
    from genpix.cli.serve import _flags

    args = build_parser().parse_args(["serve", "--vae-dir", "vaes", "--api-auth", "a:b", "--port", "7861"])
    flags = _flags(args)
    assert flags["vae_dir"] == "vaes" and flags["port"] == 7861 and flags["styles_file"] == "styles.csv"
    assert "api_auth" not in flags and "a:b" not in json.dumps(flags)
