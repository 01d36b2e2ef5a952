"""One-line errors the hardening issue found: an output path that is a file, --image-size 0, a seed beyond
64 bits (sampling and training), and a models folder whose symlinks point outside it."""

from __future__ import annotations

import os

from genpix.server.catalog import ModelCatalog


def test_output_and_number_checks(run_cli, tmp_path):
    (tmp_path / "a.png").write_bytes(b"")
    status, _, err = run_cli("sample", "fashion-vae", "-n", 1, "-o", tmp_path / "a.png")
    assert status == 1 and "is a file, not a folder" in err and len(err.strip().splitlines()) == 1
    status, _, err = run_cli("train", "vae", "--data", "digits", "--image-size", 0, "--out", tmp_path / "r")
    assert status == 2 and "--image-size: must be at least 1, got 0" in err and not (tmp_path / "r").exists()
    status, _, err = run_cli("train", "vae", "--data", "digits", "--seed", 10**24, "--steps", 1,
                             "--out", tmp_path / "s")
    assert status in (1, 2) and "--seed" in err and len(err.strip().splitlines()) == 1
    status, _, err = run_cli("sample", "fashion-vae", "-n", 1, "--seed", 10**24, "-o", tmp_path / "o")
    assert status == 2 and "must be a 64-bit seed" in err


def test_models_folder_does_not_follow_symlinks_outside_it(tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "secret.safetensors").write_bytes(b"not a model")
    models = tmp_path / "models"
    models.mkdir()
    os.symlink(outside / "secret.safetensors", models / "secret.safetensors")
    os.symlink(outside, models / "linked")
    names = [entry.name for entry in ModelCatalog(models).refresh()]
    assert not any("secret" in name for name in names)
