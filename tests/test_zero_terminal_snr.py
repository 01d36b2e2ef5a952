"""Zero terminal SNR (issue 15): the rescale of Lin et al. 2023 (Algorithm 1) with sd-webui's finite
last alpha_bar, as a request option (Python, ``genpix generate --noise-schedule``, the server's
``sd_noise_schedule`` setting), a loading option, and switched on by a checkpoint's ``ztsnr`` key.

The schedule's oracle is diffusers (``rescale_zero_terminal_snr``, ``rescale_betas_zero_snr=True``);
the models are the tiny random v-prediction SD (tests/test_sd_pipeline.py) and SDXL
(tests/sdxl_fixtures.py) pipelines.
"""

from __future__ import annotations

import base64
import io
import json
import shutil

import numpy as np
import pytest
import requests
import torch
from diffusers import DDIMScheduler, EulerDiscreteScheduler
from diffusers.schedulers.scheduling_ddim import rescale_zero_terminal_snr
from PIL import Image
from safetensors.torch import load_file, save_file
from sdxl_fixtures import sgm_layout, tiny_sdxl
from server_harness import ServerThread
from test_sd_pipeline import tiny_diffusers, write_single_file
from test_tokenizer import CORPUS, train_bpe

import genpix
from genpix.diffusion import schedules
from genpix.diffusion.denoiser import DiscreteDenoiser
from genpix.errors import GenpixError
from genpix.io.images import parse_infotext, read_infotext
from genpix.io.sd_loader import load_sd_components

SD = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000)
SIGMA_T = ((1 - schedules.ZTSNR_LAST_ALPHA_BAR) / schedules.ZTSNR_LAST_ALPHA_BAR) ** 0.5  # 4518.8
PROMPT = "a photo of an astronaut riding a horse"
REQUEST = dict(prompt=PROMPT, negative_prompt="blurry", steps=3, sampler="Euler", seed=5, width=32, height=32)


def sd_alphas_cumprod() -> torch.Tensor:
    return schedules.alphas_cumprod(schedules.betas("scaled_linear", 1000, 0.00085, 0.012))


# --- the schedule ---------------------------------------------------------------------------------------


def test_rescale_equals_diffusers_but_for_sd_webuis_last_value():
    alphas_cumprod = sd_alphas_cumprod()
    before = alphas_cumprod.clone()
    ours = schedules.rescale_zero_terminal_snr(alphas_cumprod)
    assert torch.equal(alphas_cumprod, before) and ours.dtype == torch.float32  # a pure function
    betas = schedules.betas("scaled_linear", 1000, 0.00085, 0.012)
    theirs = torch.cumprod(1 - rescale_zero_terminal_snr(betas), 0)
    torch.testing.assert_close(ours[:-1], theirs[:-1], rtol=0, atol=1e-6)
    for scheduler in (EulerDiscreteScheduler(**SD, rescale_betas_zero_snr=True),
                      DDIMScheduler(**SD, rescale_betas_zero_snr=True)):
        torch.testing.assert_close(ours[:-1], scheduler.alphas_cumprod[:-1], rtol=0, atol=1e-6)
    assert ours[-1].item() == pytest.approx(4.8973451890853435e-08, rel=1e-6)  # diffusers: 0 (Euler 2**-24)
    assert ours[0].item() == pytest.approx(alphas_cumprod[0].item(), rel=1e-6)  # the first step keeps its SNR
    assert ours[-2] < alphas_cumprod[-2]  # and the rest lose signal


@pytest.mark.parametrize("schedule", ["Automatic", "Karras", "Exponential", "SGM Uniform", "Simple", "Beta"])
def test_the_sigmas_a_sampler_sees_are_finite_and_start_at_the_large_sigma(schedule):
    denoiser = DiscreteDenoiser(lambda x, t: x, schedules.rescale_zero_terminal_snr(sd_alphas_cumprod()), "v")
    sigmas = denoiser.sigmas(10, schedule)
    assert len(sigmas) == 11 and sigmas[-1] == 0 and bool(torch.isfinite(sigmas).all())
    assert sigmas[0].item() == pytest.approx(SIGMA_T, rel=1e-4) and bool((sigmas[:-1] > sigmas[1:]).all())
    default = DiscreteDenoiser(lambda x, t: x, sd_alphas_cumprod(), "v").sigmas(10, schedule)
    assert default[0].item() == pytest.approx(14.61, rel=1e-3)  # SD's own sigma_max


def test_names_keys_and_labels_and_a_bad_name_lists_them():
    assert [schedules.noise_schedule_key(n) for n in ("Default", "default", "Zero Terminal SNR", "ZTSNR")] == \
        ["default", "default", "ztsnr", "ztsnr"]
    with pytest.raises(GenpixError, match=r"^unknown noise schedule 'zsnr'; choose one of: Default, Zero "
                                          r"Terminal SNR \(or the keys default, ztsnr\)$"):
        schedules.noise_schedule_key("zsnr")


# --- a tiny v-prediction SD model -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def sd_v(tmp_path_factory):
    """(folder of a tiny SD 2-like v-prediction model, its pipeline, the diffusers pipeline)."""
    tmp = tmp_path_factory.mktemp("sd-v")
    ref = tiny_diffusers(tmp, train_bpe(CORPUS, 60), "sd2-v")
    ref.save_pretrained(tmp / "model")
    return tmp / "model", genpix.load_pipeline(str(tmp / "model")), ref


def test_python_request_option_changes_the_picture_and_names_it(sd_v):
    _, pipe, _ = sd_v
    seen = []
    out = pipe(**REQUEST, noise_schedule="Zero Terminal SNR", callback=lambda info: seen.append(info["sigma"]))
    default = pipe(**REQUEST)
    assert pipe.parts.noise_schedule == "default"  # the shared pipeline is unchanged
    assert float(seen[0]) == pytest.approx(SIGMA_T, rel=1e-4)
    assert bool(torch.isfinite(out.tensors).all())
    assert np.abs(out.tensors.numpy() - default.tensors.numpy()).max() > 1e-2
    assert parse_infotext(out.infotexts[0])["Noise Schedule"] == "Zero Terminal SNR"
    assert "Noise Schedule" not in parse_infotext(default.infotexts[0])
    again = pipe(**REQUEST, noise_schedule="ztsnr")
    assert torch.equal(again.tensors, out.tensors)


def test_loading_option_is_the_same_as_the_request_option(sd_v):
    folder, pipe, _ = sd_v
    loaded = genpix.load_pipeline(str(folder), noise_schedule="ztsnr")
    assert loaded.parts.noise_schedule == "ztsnr" and loaded.parts.denoiser.sigma_max == pytest.approx(SIGMA_T, 1e-4)
    same = loaded(**REQUEST, noise_schedule="default")  # "default": the model's own, here the rescaled one
    assert torch.equal(same.tensors, pipe(**REQUEST, noise_schedule="ztsnr").tensors)
    assert "Noise Schedule: Zero Terminal SNR" in same.infotexts[0]


def test_cli_flag_writes_the_python_picture(sd_v, run_cli, tmp_path):
    folder, pipe, _ = sd_v
    status, _, err = run_cli("generate", PROMPT, "--model", folder, "--negative-prompt", "blurry", "--steps", 3,
                             "--sampler", "Euler", "--seed", 5, "--width", 32, "--height", 32,
                             "--noise-schedule", "Zero Terminal SNR", "-o", tmp_path / "out")
    assert status == 0, err
    written = tmp_path / "out" / "00000.png"
    assert parse_infotext(read_infotext(written))["Noise Schedule"] == "Zero Terminal SNR"
    expected = pipe(**REQUEST, noise_schedule="ztsnr").images[0]
    assert np.array_equal(np.asarray(Image.open(written)), np.asarray(expected))


def test_bad_values_are_one_line_errors(sd_v, run_cli, tmp_path):
    folder, pipe, _ = sd_v
    with pytest.raises(GenpixError, match="^unknown noise schedule 'zsnr'; choose one of: Default, Zero Terminal"):
        pipe(**REQUEST, noise_schedule="zsnr")
    with pytest.raises(GenpixError, match="^unknown noise schedule 'on'"):
        genpix.load_pipeline(str(folder), noise_schedule="on")
    status, out, err = run_cli("generate", PROMPT, "--model", folder, "--noise-schedule", "zsnr",
                               "-o", tmp_path / "o")
    assert status != 0 and not (tmp_path / "o").exists()
    assert len(err.strip().splitlines()) == 1 and "unknown noise schedule 'zsnr'" in err


def test_a_diffusers_folder_trained_with_zero_terminal_snr_samples_on_it(sd_v, tmp_path):
    folder, pipe, _ = sd_v
    shutil.copytree(folder, tmp_path / "model")
    config_file = tmp_path / "model" / "scheduler" / "scheduler_config.json"
    config_file.write_text(json.dumps({**json.loads(config_file.read_text()), "rescale_betas_zero_snr": True}))
    assert load_sd_components(tmp_path / "model").noise_schedule == "ztsnr"
    out = genpix.load_pipeline(str(tmp_path / "model"))(**REQUEST)
    assert torch.equal(out.tensors, pipe(**REQUEST, noise_schedule="ztsnr").tensors)


# --- a checkpoint with the ztsnr key --------------------------------------------------------------------


def test_an_sd2_file_with_the_ztsnr_key_samples_rescaled_with_v(sd_v, tmp_path):
    folder, pipe, ref = sd_v
    path = tmp_path / "tiny-v.safetensors"
    write_single_file(ref, "sd2-v", path)  # with its v2-inference-v.yaml: the tiny heads are not in the shapes
    save_file({**load_file(path), "ztsnr": torch.tensor([])}, path)
    loaded = genpix.load_pipeline(str(path), tokenizer=str(folder / "tokenizer"))
    assert (loaded.prediction, loaded.parts.noise_schedule) == ("v", "ztsnr")
    expected = pipe(**REQUEST, noise_schedule="ztsnr").tensors
    assert np.abs(loaded(**REQUEST).tensors.numpy() - expected.numpy()).max() < 1e-4
    path.with_suffix(".yaml").unlink()  # without the YAML the key alone says v (an SD 2 file would warn eps)
    parts = load_sd_components(path, tokenizer=folder / "tokenizer")
    assert (parts.prediction, parts.noise_schedule) == ("v", "ztsnr")


def test_an_sdxl_file_with_the_ztsnr_key_loads_rescaled_with_v_prediction(tmp_path):
    xl = tiny_sdxl(tmp_path, "base")
    xl.save_pretrained(tmp_path / "xl")
    tensors = sgm_layout(xl)
    save_file({**tensors, "v_pred": torch.tensor([]), "ztsnr": torch.tensor([])}, tmp_path / "xl-ztsnr.safetensors")
    save_file({**tensors, "ztsnr": torch.tensor([])}, tmp_path / "xl-ztsnr-only.safetensors")
    tokenizer = tmp_path / "xl" / "tokenizer"
    for name in ("xl-ztsnr", "xl-ztsnr-only"):  # the ztsnr key alone means v-prediction too
        parts = load_sd_components(tmp_path / f"{name}.safetensors", tokenizer=tokenizer)
        assert (parts.prediction, parts.noise_schedule) == ("v", "ztsnr")
    pipe = genpix.load_pipeline(str(tmp_path / "xl-ztsnr.safetensors"), tokenizer=str(tokenizer))
    assert pipe.prediction == "v" and pipe.parts.noise_schedule == "ztsnr"
    assert pipe.parts.denoiser.sigma_max == pytest.approx(SIGMA_T, rel=1e-4)
    out = pipe(**{**REQUEST, "width": 64, "height": 64})
    assert bool(torch.isfinite(out.tensors).all()) and "Noise Schedule: Zero Terminal SNR" in out.infotexts[0]
    save_file(tensors, tmp_path / "xl.safetensors")
    plain = load_sd_components(tmp_path / "xl.safetensors", tokenizer=tokenizer)
    assert (plain.prediction, plain.noise_schedule) == ("eps", "default")


# --- the server's sd_noise_schedule setting ---------------------------------------------------------------


def test_server_setting_sd_noise_schedule(sd_v, tmp_path):
    folder, pipe, _ = sd_v
    shutil.copytree(folder, tmp_path / "models" / "tiny-v")
    from genpix.server import create_app

    body = {**{k: v for k, v in REQUEST.items() if k != "sampler"}, "sampler_name": "Euler"}
    with ServerThread(create_app(models_dir=tmp_path / "models", styles_file=None)) as url:
        ztsnr = {"sd_noise_schedule": "Zero Terminal SNR"}
        bundled = requests.post(f"{url}/sdapi/v1/txt2img", json={"prompt": "a red circle", "steps": 2,
                                                                 "override_settings": ztsnr}, timeout=300)
        assert bundled.status_code == 200 and "noise_schedule" in json.loads(bundled.json()["info"])["ignored"]
        title = next(m["title"] for m in requests.get(f"{url}/sdapi/v1/sd-models", timeout=60).json()
                     if m["model_name"] == "tiny-v")
        assert requests.post(f"{url}/sdapi/v1/options", json={"sd_model_checkpoint": title},
                             timeout=300).status_code == 200
        r = requests.post(f"{url}/sdapi/v1/txt2img", json={**body, "override_settings": ztsnr}, timeout=300)
        assert r.status_code == 200, r.text
        info = json.loads(r.json()["info"])
        assert "Noise Schedule: Zero Terminal SNR" in info["infotexts"][0] and info["ignored"] == []
        bad = requests.post(f"{url}/sdapi/v1/options", json={"sd_noise_schedule": "zsnr"}, timeout=60)
        assert bad.status_code == 422 and "sd_noise_schedule" in bad.text
        assert requests.post(f"{url}/sdapi/v1/options", json={"sd_noise_schedule": "Zero Terminal SNR"},
                             timeout=60).status_code == 200
        later = requests.post(f"{url}/sdapi/v1/txt2img", json=body, timeout=300)
    expected = pipe(**REQUEST, noise_schedule="ztsnr").images[0]
    for response in (r, later):
        image = Image.open(io.BytesIO(base64.b64decode(response.json()["images"][0])))
        assert np.abs(np.asarray(image, np.int16) - np.asarray(expected, np.int16)).max() <= 1
