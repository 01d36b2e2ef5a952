"""Sampling a class-conditional model without a class (pipelines/class_prior.py): each picture's class
drawn from the uniform prior by its own seed, on the bundled fashion-ddpm, through the CLI and eval."""

import collections

import numpy as np
import pytest
from PIL import Image

import genpix
from genpix.pipelines.class_prior import class_of_seed, sample_class_prior, wants_class_prior
from genpix.pipelines.request import GenerationRequest

OPTIONS = {"steps": 4, "sampler": "DPM++ 2M", "cfg_scale": 1.0}


@pytest.fixture(scope="module")
def pipe():
    return genpix.load_pipeline("fashion-ddpm")


def test_class_of_seed_is_uniform_and_fixed():
    counts = collections.Counter(class_of_seed(seed, 10) for seed in range(5000))
    assert set(counts) == set(range(10)) and max(counts.values()) < 1.2 * 500 and min(counts.values()) > 0.8 * 500
    assert [class_of_seed(s, 10) for s in range(20)] == [class_of_seed(s, 10) for s in range(20)]


def test_each_picture_is_its_drawn_class_at_its_seed(pipe):
    request = GenerationRequest.of(n=6, seed=40, **OPTIONS)
    assert wants_class_prior(pipe, request) and not wants_class_prior(pipe, GenerationRequest.of(class_name=""))
    assert not wants_class_prior(pipe, GenerationRequest.of(prompt="sneaker"))  # a class model's prompt is a class
    out = sample_class_prior(pipe, request)
    names = pipe.capabilities.class_names
    assert out.info["classes"] == [names[class_of_seed(40 + i, 10)] for i in range(6)]
    assert out.info["seeds"] == list(range(40, 46)) and len(set(out.info["classes"])) > 1
    for i in (0, 3, 5):  # the same picture as asking for that class with that seed alone
        alone = pipe.generate(GenerationRequest.of(n=1, seed=40 + i, class_name=out.info["classes"][i], **OPTIONS))
        assert np.array_equal(np.asarray(alone.images[0]), np.asarray(out.images[i]))
        assert f"Class: {out.info['classes'][i]}" in out.infotexts[i] and f"Seed: {40 + i}" in out.infotexts[i]


def test_cli_sample_without_class_spreads_over_classes_and_null_asks_for_the_null_class(run_cli, tmp_path):
    status, _, err = run_cli("sample", "fashion-ddpm", "-n", "10", "--steps", "4", "--seed", "3",
                             "--out", str(tmp_path / "prior"))
    assert status == 0, err
    params = [Image.open(tmp_path / "prior" / f"{i:05d}.png").info["parameters"] for i in range(10)]
    names = genpix.load_pipeline("fashion-ddpm").capabilities.class_names
    assert [p.split("Class: ")[1].split(",")[0] for p in params] == [names[class_of_seed(3 + i, 10)] for i in range(10)]
    status, _, err = run_cli("sample", "fashion-ddpm", "-n", "2", "--steps", "4", "--class", "NULL",
                             "--out", str(tmp_path / "null"))
    assert status == 0, err
    assert "Class:" not in Image.open(tmp_path / "null" / "00000.png").info["parameters"]
    status, _, err = run_cli("sample", "fashion-ddpm", "-n", "2", "--class", "no such garment", "--out", str(tmp_path))
    assert status != 0 and "unknown class" in err and len(err.strip().splitlines()) == 1
