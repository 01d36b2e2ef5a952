"""`genpix export`: a model folder with chosen weights in float16, as the bundled models ship."""

import json

import pytest
import torch
from safetensors.torch import load_file

import genpix
from genpix.errors import GenpixError
from genpix.pipelines.diffusion import DDPM_DEFAULTS


@pytest.fixture
def run_dir(tiny_ddpm):
    return tiny_ddpm  # read only: export writes elsewhere


def test_export_keeps_ema_in_fp16_with_notes_and_samples_like_the_original(run_dir, tmp_path, run_cli):
    out = tmp_path / "bundle"
    status, stdout, err = run_cli("export", run_dir, out, "--roles", "ema", "--fp16",
                                  "--notes", json.dumps({"recipe": "tiny test", "hardware": "cpu"}))
    assert status == 0, err
    weights = load_file(out / "model.safetensors")
    assert {k.split(".")[0] for k in weights} == {"ema"}
    assert all(v.dtype == torch.float16 for v in weights.values() if v.is_floating_point())
    original_size = (run_dir / "model.safetensors").stat().st_size
    assert (out / "model.safetensors").stat().st_size < original_size / 3  # one role of two, half width
    config = json.loads((out / "config.json").read_text())
    assert config["notes"] == {"recipe": "tiny test", "hardware": "cpu"}
    assert config["model"] == json.loads((run_dir / "config.json").read_text())["model"]
    a = genpix.load_pipeline(str(run_dir))(n=2, seed=3, steps=4, class_name=1).tensors
    b = genpix.load_pipeline(str(out))(n=2, seed=3, steps=4, class_name=1).tensors
    assert (a - b).abs().max() < 2e-2  # float16 weights, the same model


def test_export_refuses_an_unknown_role_and_bad_notes(run_dir, tmp_path, run_cli):
    status, _, err = run_cli("export", run_dir, tmp_path / "x", "--roles", "generator")
    assert status == 1 and "no 'generator' weights" in err and "ema" in err
    assert not (tmp_path / "x" / "model.safetensors").exists()
    status, _, err = run_cli("export", run_dir, tmp_path / "y", "--notes", "[1, 2]")
    assert status == 1 and "JSON object" in err


def test_export_records_the_models_own_sampling_defaults_and_requests_fall_back_to_them(run_dir, tmp_path, run_cli):
    out = tmp_path / "bundle"
    status, _, err = run_cli("export", run_dir, out, "--roles", "ema", "--steps", "3", "--sampler", "DPM++ 2M",
                             "--cfg-scale", "2")
    assert status == 0, err
    assert json.loads((out / "config.json").read_text())["sampling"] == {"steps": 3, "sampler": "DPM++ 2M",
                                                                         "cfg_scale": 2.0}
    bundled, original = genpix.load_pipeline(str(out)), genpix.load_pipeline(str(run_dir))
    assert (bundled.capabilities.defaults.steps, original.capabilities.defaults.steps) == (3, 50)
    got = bundled(n=1, seed=5, class_name=2)
    assert (got.info["steps"], got.info["sampler"], got.info["cfg_scale"]) == (3, "DPM++ 2M", 2.0)
    asked = original(n=1, seed=5, class_name=2, steps=3, sampler="DPM++ 2M", cfg_scale=2.0)
    assert torch.equal(got.tensors, asked.tensors)
    assert bundled(n=1, seed=5, class_name=2, steps=4).info["steps"] == 4  # a request's own value wins


@pytest.mark.parametrize(("flags", "message"), [
    (("--sampler", "Nope"), "unknown sampler"), (("--cfg-scale", "-1"), "cfg_scale must be a number from 0"),
    (("--steps", "0"), "steps must be between 1")])
def test_export_refuses_bad_sampling_defaults_and_writes_nothing(run_dir, tmp_path, run_cli, flags, message):
    status, _, err = run_cli("export", run_dir, tmp_path / "x", *flags)
    assert status == 1 and message in err.lower() and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(("section", "message"), [
    ({"steps": "many"}, "steps must be a whole number"), ({"seed": 1}, "takes steps, sampler and cfg_scale"),
    ({"sampler": 3}, "sampler must be a sampler's name"), ({"cfg_scale": True}, "cfg_scale must be a number")])
def test_a_bad_sampling_section_is_a_one_line_error_naming_the_file(section, message):
    with pytest.raises(GenpixError, match=f"^m/config.json: .*sampling.*{message}"):
        DDPM_DEFAULTS.overridden(section, "m/config.json")
    assert DDPM_DEFAULTS.overridden({}, "m/config.json") == DDPM_DEFAULTS
