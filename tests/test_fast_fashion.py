"""benchmarks/fast_fashion.py: its setting syntax, its pass rule, and class-balanced sampling from
fixed seeds on the bundled fashion-ddpm (the same noise whatever the setting's batch)."""

import argparse
import sys
from pathlib import Path

import pytest
import torch

import genpix

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from fast_fashion import Setting, parse_setting, sample_balanced, verdicts  # noqa: E402


def test_a_setting_names_sampler_steps_and_options():
    setting = parse_setting("DPM++ 2M SDE:10:cfg=1.5:batch=50:schedule=Karras:deepcache=2")
    assert setting == Setting("DPM++ 2M SDE", 10, 1.5, 50, "Karras", 2)
    assert setting.label == "DPM++ 2M SDE 10, cfg 1.5, batch 50, Karras, DeepCache 2"
    assert parse_setting("DDIM:50") == Setting("DDIM", 50)
    assert parse_setting("DDIM:50").fields(steps=2)["steps"] == 2


@pytest.mark.parametrize("text, said", [("Nope:8", "unknown sampler 'Nope'"), ("DDIM:x", "SAMPLER:STEPS"),
                                        ("DDIM:8:eta=1", "KEY one of cfg, batch"), ("DDIM:0", "steps must be"),
                                        ("DDIM:8:schedule=zz", "unknown schedule type")])
def test_a_bad_setting_is_refused_before_sampling(text, said):
    with pytest.raises(argparse.ArgumentTypeError, match=said):
        parse_setting(text)


def test_a_candidate_passes_only_within_time_and_tolerance_of_the_best_reference():
    references = [{"fd": 10.0, "seconds_per_1000": 200.0}, {"fd": 8.0, "seconds_per_1000": 400.0}]
    candidates = [{"fd": 8.8, "seconds_per_1000": 30.0}, {"fd": 8.9, "seconds_per_1000": 20.0},
                  {"fd": 5.0, "seconds_per_1000": 30.5}]
    assert verdicts(references, candidates, budget_s=30.0, tolerance=1.10) == 8.0
    assert [c["pass"] for c in candidates] == [True, False, False]
    assert candidates[0]["ratio"] == pytest.approx(1.1)
    assert references[0]["ratio"] == pytest.approx(1.25)


def test_class_balanced_images_come_from_fixed_seeds_whatever_the_batch():
    pipe = genpix.load_pipeline("fashion-ddpm")
    setting = Setting("DDIM", 2, batch_size=1)
    images, seconds = sample_balanced(pipe, setting, per_class=2, seed=7, batch_size=64)
    assert images.shape == (20, 1, 28, 28) and seconds > 0 and pipe.batch_size == 1
    again, _ = sample_balanced(pipe, Setting("DDIM", 2), per_class=2, seed=7, batch_size=2)
    torch.testing.assert_close(again, images, atol=1e-5, rtol=0)
    coat = pipe(n=1, seed=7 + 4 * 1000 + 1, class_name="Coat", sampler="DDIM", steps=2, cfg_scale=1.0).tensors
    torch.testing.assert_close(images[9:10], coat, atol=1e-5, rtol=0)  # class 4, its second image
    assert not torch.allclose(images[0], images[2])  # another class, another seed
