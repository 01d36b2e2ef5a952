import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from genpix.io.atomic import atomic_directory
from genpix.io.checkpoint import (
    CheckpointError,
    read_model_dir,
    read_training_checkpoint,
    write_model_dir,
    write_training_checkpoint,
)
from genpix.models.vae import VAE, VAEConfig

CONFIG = {"family": "vae", "model": {"latent_dim": 2}, "step": 3}


def test_model_dir_round_trip(tmp_path):
    vae = VAE(VAEConfig())
    write_model_dir(tmp_path, CONFIG, {"vae": vae})
    loaded = read_model_dir(tmp_path)
    assert loaded.family == "vae" and loaded.config["step"] == 3
    for key, tensor in vae.state_dict().items():
        assert torch.equal(loaded.weights["vae"][key], tensor)


def test_optimizer_state_round_trip(tmp_path):
    torch.manual_seed(0)
    vae = VAE(VAEConfig())
    adam = torch.optim.Adam(vae.parameters(), lr=1e-3)
    for _ in range(2):
        adam.zero_grad()
        vae.loss(torch.rand(4, 1, 28, 28))["loss"].backward()
        adam.step()
    write_training_checkpoint(tmp_path / "ck", CONFIG, {"vae": vae}, {"adam": adam}, {"step": 2})
    ckpt = read_training_checkpoint(tmp_path / "ck")
    fresh = torch.optim.Adam(VAE(VAEConfig()).parameters(), lr=1e-3)
    fresh.load_state_dict(ckpt.optimizers["adam"])
    a, b = adam.state_dict(), fresh.state_dict()
    assert a["param_groups"] == b["param_groups"]
    for index, state in a["state"].items():
        for key, value in state.items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(b["state"][index][key]))


def test_atomic_directory_leaves_nothing_on_failure(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_directory(tmp_path / "ck") as tmp:
            (tmp / "half.bin").write_bytes(b"x")
            raise RuntimeError("killed mid-write")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("damage,message", [
    (lambda d: (d / "model.safetensors").unlink(), "model.safetensors is missing"),
    (lambda d: ((d / "config.json").unlink(), save_file(load_file(d / "model.safetensors"), d / "model.safetensors")),
     "config.json is missing"),  # (weights that carry their config are read without it: test_run_folder_safety.py)
    (lambda d: (d / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{\"a\""),
     "not a readable safetensors file"),
    (lambda d: (d / "model.safetensors").write_bytes((d / "model.safetensors").read_bytes()[:500]),
     "not a readable safetensors file"),
    (lambda d: (d / "config.json").write_text("{not json"), "not valid JSON"),
    (lambda d: (d / "config.json").write_text(json.dumps({**CONFIG, "family": "flow"})),
     "unknown family 'flow'"),
    (lambda d: (d / "config.json").write_text(json.dumps({**CONFIG, "colour": 1})),
     "unknown key 'colour'"),
])
def test_damaged_model_dirs_give_one_line_errors(tmp_path, damage, message):
    write_model_dir(tmp_path, CONFIG, {"vae": VAE(VAEConfig())})
    damage(tmp_path)
    with pytest.raises(CheckpointError, match=message) as error:
        read_model_dir(tmp_path)
    assert "\n" not in str(error.value)


def test_atomic_files_get_the_usual_mode_of_a_new_file(tmp_path):
    import os

    from genpix.io.atomic import write_atomic

    mask = os.umask(0o022)
    try:
        write_atomic(tmp_path / "a.json", lambda p: p.write_text("{}"))
    finally:
        os.umask(mask)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644  # readable by others, as open() makes it
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]  # no temporary left behind
