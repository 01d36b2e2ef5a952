"""``genpix report`` (the generative trilemma) at tiny sizes: it trains each family, samples it and
writes the Markdown report with its plot, sample grids and JSON."""

import json

import pytest
import torch

from genpix.data import load_dataset
from genpix.eval.features.domain import DomainTrainConfig, save_domain_features, train_domain_net


@pytest.fixture(scope="module")
def features(tmp_path_factory):
    data = load_dataset("fashion-mnist", split="train", limit=1000)
    network = train_domain_net(data.images, data.labels, data.class_names, DomainTrainConfig(steps=10, batch_size=32),
                               torch.device("cpu"))
    return save_domain_features(tmp_path_factory.mktemp("features") / "fashion", network, data.class_names,
                                {"data": {"spec": "fashion-mnist"}})


@pytest.mark.slow  # trains three families
def test_report_trains_samples_and_writes_markdown_plot_and_json(features, tmp_path, run_cli):
    out = tmp_path / "docs" / "report.md"
    status, stdout, err = run_cli("report", "--features", f"domain:{features}", "--budget-s", "0.1", "--max-steps", "2",
                                  "--batch-size", "8", "--limit", "64", "-n", "10", "--diffusion", "DDIM:2",
                                  "--runs-dir", tmp_path / "runs", "--out", out, "--json", tmp_path / "report.json",
                                  "--device", "cpu", "--threads", "1")
    assert status == 0, err
    assert {p.name for p in (tmp_path / "runs").iterdir()} == {"vae", "gan", "ddpm"}
    figures = json.loads((tmp_path / "report.json").read_text())
    assert [r["label"] for r in figures["rows"]] == ["vae", "gan", "ddpm DDIM (2 steps)"]
    for row in figures["rows"]:
        assert 1 <= row["train_steps"] <= 2 and row["train_s"] > 0 and row["ms_per_image"] > 0
        assert row["metrics"]["fid"] > 0 and 0 <= row["metrics"]["recall"] <= 1
        assert (out.parent / row["grid"]).is_file()
    assert figures["reference"]["fid"] >= 0 and figures["info"]["features"].startswith("domain:")
    text = out.read_text()
    assert "| ddpm DDIM (2 steps) |" in text and "real train images (the floor at this N)" in text
    assert "![quality against speed](report-images/quality-speed.png)" in text
    assert (out.parent / "report-images" / "quality-speed.png").is_file()
    # a second report into the same runs folder refuses before training anything
    status, _, err = run_cli("report", "--features", f"domain:{features}", "--runs-dir", tmp_path / "runs")
    assert status == 1 and "already hold a trained model: pass another --runs-dir" in err


def test_report_bad_options(run_cli, tmp_path):
    status, _, err = run_cli("report", "--data", str(tmp_path))
    assert status == 1 and "genpix report needs a named dataset with a test split" in err
    status, _, err = run_cli("report", "--diffusion", "DDIM")
    assert status == 2 and "expected SAMPLER:STEPS such as 'DDIM:10'" in err
    status, _, err = run_cli("report", "--diffusion", "Nope:3", "--features", "domain:/nonexistent.safetensors")
    assert status == 1 and "unknown sampler 'Nope'" in err


def test_rows_per_family_are_one_for_vae_and_gan_and_one_per_diffusion_sampler():
    from genpix.eval.trilemma import ReportConfig

    config = ReportConfig(diffusion=(("DDIM", 2), ("DPM++ 2M", 3)))
    assert config.ways("vae") == [("decoder", {})] and config.ways("gan") == [("generator", {})]
    assert config.ways("ddpm") == [("DDIM (2 steps)", {"sampler": "DDIM", "steps": 2}),
                                   ("DPM++ 2M (3 steps)", {"sampler": "DPM++ 2M", "steps": 3})]
