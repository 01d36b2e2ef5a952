"""``genpix bench`` at tiny sizes: the JSON it writes, and the docs table it maintains between markers."""

import json

import pytest

from genpix.eval.bench_docs import BEGIN, END, SECTION, update_markdown

TINY = ["--image-size", "16", "--batch-size", "2", "--train-steps", "1", "-n", "2", "--steps", "2",
        "--repeats", "2", "--threads", "1", "--device", "cpu", "--sampler", "DDIM", "--sampler", "Euler"]


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    from genpix.cli import main

    path = tmp_path_factory.mktemp("bench") / "bench.json"
    assert main(["bench", *TINY, "--json", str(path)]) == 0
    return json.loads(path.read_text())


def test_bench_json_has_every_family_sampler_and_the_diffusers_ratio(result):
    assert result["threads"] == 1 and result["device"] == "cpu" and result["config"]["repeats"] == 2
    assert set(result["families"]) == {"vae", "gan", "ddpm"}
    for family, figures in result["families"].items():
        assert figures["parameters"] > 0 and figures["train_images_per_s"] > 0 and figures["peak_rss_mib"] > 0
        assert len(figures["train_window_s"]) == 2 and all(s > 0 for s in figures["train_window_s"])
        assert figures["sample_ms_per_image"] and all(ms > 0 for ms in figures["sample_ms_per_image"].values())
    assert list(result["families"]["ddpm"]["sample_ms_per_image"]) == ["DDIM", "Euler"]
    assert list(result["families"]["vae"]["sample_ms_per_image"]) == ["decoder"]
    unet = result["unet_vs_diffusers"]
    assert unet["genpix"]["parameters"] == unet["diffusers"]["parameters"]  # the same network, twice
    for who in ("genpix", "diffusers"):
        assert unet[who]["train_images_per_s"] > 0 and unet[who]["forward_ms_per_image"] > 0
    assert unet["train_ratio"] == pytest.approx(
        unet["genpix"]["train_images_per_s"] / unet["diffusers"]["train_images_per_s"], rel=1e-2)
    assert unet["forward_ratio"] > 0


def test_docs_tables_are_written_between_markers_only(result, tmp_path):
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# benchmarks\n\nhand-written figures\n")
    update_markdown(doc, result)
    first = doc.read_text()
    assert first.startswith("# benchmarks\n\nhand-written figures\n\n" + SECTION)
    assert first.count(BEGIN) == first.count(END) == 1 and "| ddpm | 1.11M |" in first
    assert "| ratio |" in first and "DDIM (2 steps)" in first
    doc.write_text(first.replace(SECTION, SECTION + "\n\nmy note") + "\n## later section\n")
    update_markdown(doc, {**result, "threads": 7})
    second = doc.read_text()
    assert second.count(BEGIN) == 1 and "--threads 7" in second and "--threads 1" not in second
    assert "my note" in second and second.endswith("\n## later section\n")
    doc.write_text(f"{END}\n{BEGIN}\n")
    with pytest.raises(Exception, match="end marker comes before"):
        update_markdown(doc, result)


def test_bench_bad_options_are_one_line_errors(run_cli):
    status, _, err = run_cli("bench", "--sampler", "Nope")
    assert status == 1 and "unknown sampler 'Nope'; choose one of: " in err and "DDIM" in err
    status, _, err = run_cli("bench", "--preset", "huge")
    assert status == 1 and "unknown preset 'huge'; choose one of: tiny, small, base" in err
    status, _, err = run_cli("bench", "--family", "vq")
    assert status == 2 and "invalid choice: 'vq'" in err
