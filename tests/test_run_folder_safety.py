"""Run folders survive kills, power loss and full disks, and careless output paths are one-line errors
(issue 21, items 9 and 10): a half-written log line, weights and config.json as one unit, an optimizer
state that does not fit, a file where a folder is wanted, export onto its source, --seed overflow."""

import json
import os
import subprocess
import warnings

import pytest
import torch
from safetensors.torch import load_file, save_file

from genpix.io.atomic import DiskFullError, disk_full_is_an_error
from genpix.io.checkpoint import read_model_dir, read_training_checkpoint, write_model_dir

TINY = ["--data", "digits", "--image-size", "16", "--limit", "64", "--batch-size", "16",
        "--latent-dim", "2", "--widths", "8,16", "--quiet", "--device", "cpu", "--sample-every", "1000"]


def weights(folder):
    return load_file(folder / "model.safetensors")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny vae run of 4 steps with checkpoints at 2 and 4."""
    from genpix.cli import main

    out = tmp_path_factory.mktemp("runs") / "vae"
    assert main(["train", "vae", *TINY, "--steps", "4", "--checkpoint-every", "2", "--out", str(out)]) == 0
    return out


def copy_run(run, tmp_path):
    subprocess.run(["cp", "-a", str(run), str(tmp_path / "copy")], check=True)
    return tmp_path / "copy"


def test_resume_with_a_half_written_last_log_line(run, tmp_path, run_cli):
    out = copy_run(run, tmp_path)
    with open(out / "log.jsonl", "a") as log:
        log.write('{"step": 5, "loss": 0.1')  # a kill in the middle of a line
    status, _, err = run_cli("train", "vae", "--out", out, "--resume", "--steps", "6", "--quiet", "--device", "cpu")
    assert status == 0, err
    steps = [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 7))


def test_weights_and_config_are_one_unit(run, tmp_path):
    out = copy_run(run, tmp_path)
    model = read_model_dir(out)
    config = {k: v for k, v in model.config.items() if k != "genpix"}
    newer = {**config, "step": 99, "notes": {"a": 1}}
    write_model_dir(out, newer, {role: w for role, w in model.weights.items()})
    (out / "config.json").write_text(json.dumps({**model.config}))  # as if killed before config.json's rename
    with pytest.warns(UserWarning, match="does not belong to the weights beside it"):
        again = read_model_dir(out)
    assert again.config["step"] == 99 and again.config["notes"] == {"a": 1}
    (out / "config.json").unlink()  # as if killed before the first config.json of a new folder
    with pytest.warns(UserWarning, match="does not belong to the weights beside it"):
        assert read_model_dir(out).config["step"] == 99
    write_model_dir(out, newer, model.weights)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_model_dir(out).config["step"] == 99  # a matching pair: no warning


@pytest.mark.parametrize("damage", ["groups", "shape"])
def test_an_optimizer_state_that_does_not_fit_falls_back_to_an_older_checkpoint(run, tmp_path, run_cli, damage):
    out = copy_run(run, tmp_path)
    newest = out / "checkpoints" / "step-00000004"
    if damage == "groups":  # one parameter fewer in the group
        state = json.loads((newest / "state.json").read_text())
        next(iter(state["optimizers"].values()))["param_groups"][0]["params"].pop()
        (newest / "state.json").write_text(json.dumps(state))
    else:  # Adam's moments of another shape
        tensors = load_file(newest / "optimizer.safetensors")
        key = next(k for k in tensors if k.endswith("exp_avg") and tensors[k].dim() > 1)
        tensors[key] = torch.zeros(tensors[key].shape[0] + 1, *tensors[key].shape[1:])
        save_file(tensors, newest / "optimizer.safetensors")
    status, _, err = run_cli("train", "vae", "--out", out, "--resume", "--steps", "4", "--quiet", "--device", "cpu")
    assert status == 0, err
    assert "skipped unreadable checkpoint(s): step-00000004" in err and "optimizer" in err
    assert torch.equal(weights(out)["vae.to_mu.weight"], weights(run)["vae.to_mu.weight"])  # redone from step 2


def test_output_paths_that_are_files_are_one_line_errors(run, tmp_path, run_cli):
    file = tmp_path / "taken.png"
    file.write_bytes(b"x")
    for args in (["train", "vae", *TINY, "--steps", "1", "--out", file],
                 ["export", run, file],
                 ["export", run, file / "below"],
                 ["sample", run, "-n", "1", "-o", file]):
        status, _, err = run_cli(*args)
        assert status == 1 and err.startswith("genpix: error:") and len(err.strip().splitlines()) == 1, (args, err)
        assert str(file) in err or "taken.png" in err
    assert file.read_bytes() == b"x"


def test_export_refuses_to_overwrite_its_source(run, tmp_path, run_cli):
    out = copy_run(run, tmp_path)
    before = (out / "model.safetensors").read_bytes()
    status, _, err = run_cli("export", out, out, "--fp16")
    assert status == 1 and "would overwrite its source" in err
    status, _, err = run_cli("export", out, f"{out}/.", "--fp16")  # the same folder by another name
    assert status == 1 and "would overwrite its source" in err
    assert (out / "model.safetensors").read_bytes() == before


@pytest.mark.parametrize("seed", [str(2**64), str(-(2**64)), "99999999999999999999999"])
def test_seed_beyond_64_bits_is_a_one_line_error(run, tmp_path, run_cli, seed):
    status, _, err = run_cli("sample", run, "-n", "1", "--seed", seed, "-o", tmp_path / "o")
    assert status == 2 and "--seed: must be a 64-bit seed" in err and len(err.strip().splitlines()) == 1


def test_disk_full_errors_name_the_file():
    def full():
        raise OSError(28, "No space left on device")

    with pytest.raises(DiskFullError, match="no space left on the device while writing run/model"):
        with disk_full_is_an_error("run/model"):
            full()
    with pytest.raises(DiskFullError):  # safetensors' own error carries the OS code
        with disk_full_is_an_error("x"):
            raise RuntimeError("Error while serializing: IoError(Os { code: 28, kind: StorageFull, "
                               "message: \"No space left on device\" })")
    with pytest.raises(OSError):  # any other OS error keeps its type
        with disk_full_is_an_error("x"):
            raise OSError(13, "Permission denied")


def test_a_full_tmpfs_is_a_clear_error_and_the_last_checkpoint_stays(tmp_path, run_cli):
    mount = tmp_path / "small"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)],
                                           capture_output=True).returncode != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    try:
        probe = mount / "probe"
        assert run_cli("train", "vae", *TINY, "--steps", "1", "--checkpoint-every", "1", "--out", probe)[0] == 0
        used = sum(p.stat().st_size for p in probe.rglob("*") if p.is_file())
        subprocess.run(["rm", "-rf", str(probe)], check=True)
        free = os.statvfs(mount).f_bavail * os.statvfs(mount).f_frsize
        (mount / "filler").write_bytes(b"\0" * (free - int(used * 1.6)))  # room for one checkpoint, not two
        out = mount / "run"
        status, _, err = run_cli("train", "vae", *TINY, "--steps", "8", "--checkpoint-every", "1", "--out", out)
        assert status == 1 and len(err.strip().splitlines()) == 1, err
        assert "genpix: error: no space left on the device while writing" in err
        complete = [p for p in (out / "checkpoints").iterdir() if p.name.startswith("step-")]
        assert complete and all(read_training_checkpoint(p).state["step"] >= 1 for p in complete)
        read_model_dir(out)  # the run folder's own weights and config stay a readable pair
        (mount / "filler").unlink()
        status, _, err = run_cli("train", "vae", "--out", out, "--resume", "--quiet", "--device", "cpu")
        assert status == 0, err
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)
