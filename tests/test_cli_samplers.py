"""`genpix samplers` and `genpix sample --sampler/--schedule/--eta/...` on a tiny trained model."""

import numpy as np
import pytest
from PIL import Image

import genpix
from genpix.diffusion import samplers

ORACLE_COVERED = {"Euler", "Euler a", "Heun", "DPM2", "DPM2 a", "LMS", "DPM++ 2M", "DPM++ 2M SDE", "DPM++ 2M SDE Heun",
                  "UniPC", "PLMS", "DDIM", "LCM", "DPM++ 2S a", "DPM++ SDE"}


@pytest.fixture
def model(tiny_ddpm):
    return tiny_ddpm  # the shared tiny class model (tests/tiny_ddpm.py); sampling writes elsewhere


def test_samplers_lists_names_aliases_and_default_schedules(run_cli):
    status, out, err = run_cli("samplers")
    assert status == 0, err
    rows = {line[:19].strip(): line for line in out.splitlines()}
    for entry in samplers.SAMPLER_INFO.values():
        assert entry.name in rows and all(alias in rows[entry.name] for alias in entry.aliases)
    assert "Karras" in rows["DPM++ 2M"] and "Exponential" in rows["DPM++ 3M SDE"] and "DDIM" in rows["PLMS"]
    assert "SGM Uniform" in out and "Beta" in out and "DPM++ 2M Karras" in out


# the samplers tests/test_samplers_oracle.py does not compare with diffusers, and combined and legacy names;
# every name's sampling is covered by tests/test_samplers.py, the others' numbers by the oracle tests
CLI_NAMES = [n for n in samplers.names() if n not in ORACLE_COVERED] + ["DPM++ 2M Karras", "DPM++ SDE Karras",
                                                                       "k_euler_a"]


def test_the_oracle_tests_still_cover_the_samplers_left_out_here():
    import test_samplers_oracle as oracle

    compared = {c[0] for c in (*oracle.SIGMA_FORM, *oracle.VP_FORM)} | {"PLMS", "DDIM", "LCM", "DPM++ 2S a", "DPM++ SDE"}
    assert ORACLE_COVERED <= compared and ORACLE_COVERED <= set(samplers.names())


@pytest.mark.parametrize("name", CLI_NAMES)
def test_sample_reaches_each_sampler_by_name(model, tmp_path, run_cli, name):
    status, _, err = run_cli("sample", model, "-n", "2", "--steps", "3", "--sampler", name, "-o", tmp_path)
    assert status == 0, err
    entry, schedule = samplers.resolve(name)
    text = Image.open(tmp_path / "00000.png").info["parameters"]
    assert f"Sampler: {entry.name}, Schedule type: " in text


def test_schedule_and_sampler_options_reach_the_sampler(model, tmp_path, run_cli):
    def run(*args):
        status, _, err = run_cli("sample", model, "-n", "1", "--steps", "4", "--npy", tmp_path / "a.npy", *args)
        assert status == 0, err
        return np.load(tmp_path / "a.npy")

    karras = run("--sampler", "Euler", "--schedule", "karras")
    assert np.array_equal(karras, run("--sampler", "Euler Karras"))
    assert np.array_equal(karras, run("--sampler", "Euler", "--schedule", "KARRAS"))
    status, _, err = run_cli("sample", model, "-n", "1", "--steps", "4", "--schedule", "beta", "-o", tmp_path / "b")
    assert status == 0, err
    assert "Sampler: DDIM, Schedule type: Beta" in Image.open(tmp_path / "b/00000.png").info["parameters"]
    pipe = genpix.load_pipeline(str(model))
    beta, uniform = (pipe(n=1, steps=4, sampler="Euler", schedule=s).tensors for s in ("Beta", None))
    assert (beta - uniform).abs().max() > 1e-4
    assert not np.array_equal(run("--sampler", "Euler a"), run("--sampler", "Euler a", "--eta", "0.5"))
    assert not np.array_equal(run("--sampler", "Euler"), run("--sampler", "Euler", "--s-churn", "2"))
    assert not np.array_equal(run("--sampler", "Euler a"), run("--sampler", "Euler a", "--s-noise", "0.5"))


@pytest.mark.parametrize("args, message", [
    (["--sampler", "Euler b"], "unknown sampler 'Euler b'; choose one of: DPM++ 2M, DPM++ SDE,"),
    (["--schedule", "cosine"], "unknown schedule type 'cosine'; choose one of: Automatic, Uniform, Karras,"),
    (["--sampler", "DPM++ 2M Karras", "--schedule", "Beta"], "names the karras schedule but schedule 'Beta'"),
    (["--steps", "1001", "--schedule", "karras"], "steps must be between 1 and 1000, got 1001"),
    (["--steps", "101"], "steps must be between 1 and the model's 100 timesteps, got 101"),
    (["--sampler", "Euler a", "--eta", "1.5"], "eta must be between 0.0 and 1.0, got 1.5"),
    (["--sampler", "Euler", "--s-churn", "-1"], "s_churn must be between 0.0 and 100.0, got -1.0"),
    (["--sampler", "DPM++ SDE", "--s-noise", "5"], "s_noise must be between 0.0 and 2.0, got 5.0"),
    (["--sampler", "Euler", "--eta", "0.5"], "sampler 'Euler' takes no eta; it takes: s_churn, s_tmin, s_tmax"),
])
def test_bad_sampler_input_is_one_line_and_a_non_zero_exit(model, tmp_path, run_cli, args, message):
    status, _, err = run_cli("sample", model, "-n", "1", "--steps", "2", *args, "-o", tmp_path)
    assert status == 1 and message in err and len(err.strip().splitlines()) == 1, err
    assert not list(tmp_path.glob("*.png"))


def test_steps_below_one_is_an_argument_error(model, run_cli):
    status, _, err = run_cli("sample", model, "--steps", "0")
    assert status == 2 and "must be at least 1, got 0" in err
