"""`genpix export`: a model folder with chosen weights in float16, as the bundled models ship."""

import json

import pytest
import torch
from safetensors.torch import load_file

import genpix


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
