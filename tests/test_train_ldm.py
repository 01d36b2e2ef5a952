"""Latent diffusion end to end at tiny sizes: `genpix train autoencoder`, `genpix train ldm` on top
of it, sampling by prompt (CLI and load_pipeline), exact resume, and one-line errors."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import genpix

DATA = ["--data", "digits", "--image-size", "16", "--limit", "64", "--batch-size", "8", "--quiet", "--device", "cpu"]
AE = [*DATA, "--block-out-channels", "8,16,16", "--norm-num-groups", "4"]
LDM = [*DATA, "--block-out-channels", "16,32", "--head-channels", "8", "--norm-num-groups", "8", "--text-width", "32",
       "--text-layers", "1", "--text-max-length", "24", "--sample-every", "100"]
SAMPLE = dict(steps=4, sampler="DPM++ 2M", seed=3)


def same_weights(a, b):
    a, b = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from genpix.cli import main

    root = tmp_path_factory.mktemp("ldm")
    assert main(["train", "autoencoder", *AE, "--steps", "6", "--sample-every", "6", "--out", str(root / "ae")]) == 0
    assert main(["train", "ldm", *LDM, "--autoencoder", str(root / "ae"), "--steps", "4", "--sample-every", "4",
                 "--out", str(root / "ldm")]) == 0
    return root


def test_autoencoder_reports_psnr_ssim_and_measures_the_scaling_factor(runs):
    metrics = json.loads((runs / "ae" / "metrics.json").read_text())
    assert metrics["psnr"] > 0 and 0 < metrics["ssim"] <= 1 and metrics["images"] > 0
    config = json.loads((runs / "ae" / "config.json").read_text())
    assert config["family"] == "autoencoder" and config["model"]["scaling_factor"] == metrics["scaling_factor"] > 0
    assert {k.split(".")[0] for k in load_file(runs / "ae" / "model.safetensors")} == {"autoencoder"}
    assert (runs / "ae" / "samples" / "reconstructions-00000006.png").is_file()


def test_autoencoder_with_patch_discriminator_resumes_exactly(tmp_path, run_cli):
    straight, split = tmp_path / "straight", tmp_path / "split"
    common = [*AE, "--checkpoint-every", "2", "--reconstruction", "l2", "--disc-start", "1"]
    assert run_cli("train", "autoencoder", *common, "--steps", "4", "--out", straight)[0] == 0
    log = [json.loads(line) for line in (straight / "log.jsonl").read_text().splitlines()]
    assert "d_loss" not in log[0] and log[1]["d_loss"] > 0 and "g_loss" in log[1]  # the PatchGAN after warm-up
    assert "discriminator.main.0.weight" in load_file(straight / "model.safetensors")
    assert run_cli("train", "autoencoder", *common, "--steps", "2", "--out", split)[0] == 0
    status, _, err = run_cli("train", "autoencoder", "--out", split, "--resume", "--steps", "4", "--quiet")
    assert status == 0, err
    assert same_weights(straight, split)
    measured = [json.loads((run / "config.json").read_text())["model"]["scaling_factor"] for run in (straight, split)]
    assert measured[0] == measured[1]


def test_ldm_trains_on_the_frozen_autoencoder(runs):
    config = json.loads((runs / "ldm" / "config.json").read_text())
    ae = json.loads((runs / "ae" / "config.json").read_text())["model"]
    assert config["family"] == "ldm" and config["model"]["cond"] == "text"
    assert config["model"]["first_stage"]["scaling_factor"] == ae["scaling_factor"]
    weights = load_file(runs / "ldm" / "model.safetensors")
    assert {k.split(".")[0] for k in weights} == {"model", "ema", "first_stage"}
    assert any(k.startswith("model.conditioner.text.") for k in weights)  # tau_theta trained jointly
    first_stage = {k[len("first_stage."):]: v for k, v in weights.items() if k.startswith("first_stage.")}
    trained = {k[len("autoencoder."):]: v for k, v in load_file(runs / "ae" / "model.safetensors").items()}
    assert first_stage.keys() == trained.keys() and all(torch.equal(first_stage[k], trained[k]) for k in trained)
    assert json.loads((runs / "ldm" / "metrics.json").read_text())["test_loss"] > 0
    assert (runs / "ldm" / "samples" / "samples-00000004.png").is_file()


def test_ldm_resume_reaches_the_weights_of_an_uninterrupted_run(runs, tmp_path, run_cli):
    straight, split = tmp_path / "straight", tmp_path / "split"
    common = [*LDM, "--autoencoder", runs / "ae", "--checkpoint-every", "2", "--prediction", "v"]
    assert run_cli("train", "ldm", *common, "--steps", "4", "--out", straight)[0] == 0
    assert run_cli("train", "ldm", *common, "--steps", "2", "--out", split)[0] == 0
    status, _, err = run_cli("train", "ldm", "--out", split, "--resume", "--steps", "4", "--quiet")
    assert status == 0, err
    assert same_weights(straight, split)


def test_posteriors_of_dataset_rows_are_encoded_once_and_equal_the_direct_encoding(runs):
    from genpix.diffusion.ldm_config import LDMConfig
    from genpix.training.ldm import LDMTask, load_first_stage
    from genpix.training.task import Batch

    autoencoder = load_first_stage(runs / "ae")
    task = LDMTask(LDMConfig(image_size=16, channels=1, block_out_channels=(16, 32), head_channels=8, norm_num_groups=8,
                             text_width=32, text_layers=1, text_max_length=24), lr=1e-4,
                   device=torch.device("cpu"), autoencoder=autoencoder)
    calls = []
    autoencoder.encoder.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    images = torch.rand(4, 1, 16, 16, generator=torch.Generator().manual_seed(0))

    def batch(rows, indices):
        return Batch(images[rows], None, None, generator=torch.Generator().manual_seed(7),
                     indices=None if indices is None else torch.tensor(indices))

    cached = task.latents(batch([0, 1], [10, 11]))
    again = task.latents(batch([1, 2], [11, 12]))  # row 11 from the cache, row 12 encoded
    direct = task.latents(batch([1, 2], None))
    assert calls == [2, 1, 2] and cached.shape == again.shape
    assert torch.allclose(again, direct, atol=1e-6)  # the same eps rows, the same q(z|x)


def test_sample_by_prompt_writes_infotexts_and_matches_load_pipeline(runs, tmp_path, run_cli):
    status, _, err = run_cli("sample", runs / "ldm", "-n", "2", "--prompt", "a handwritten digit 3",
                             "--negative-prompt", "a handwritten digit 1", "--cfg-scale", "5", "--steps", "4",
                             "--sampler", "DPM++ 2M", "--seed", "3", "-o", tmp_path / "out", "--device", "cpu")
    assert status == 0, err
    text = Image.open(tmp_path / "out" / "00001.png").text["parameters"]
    assert text.startswith("a handwritten digit 3\nNegative prompt: a handwritten digit 1\nSteps: 4, Sampler: DPM++ 2M")
    assert "CFG scale: 5.0, Seed: 4" in text
    pipe = genpix.load_pipeline(str(runs / "ldm"))
    out = pipe(prompt="a handwritten digit 3", negative_prompt="a handwritten digit 1", cfg_scale=5, n=2, **SAMPLE)
    assert out.tensors.shape == (2, 1, 16, 16) and out.info["family"] == "ldm"
    assert np.array_equal(np.asarray(out.images[1]), np.asarray(Image.open(tmp_path / "out" / "00001.png")))


def test_prompt_changes_the_image_and_the_negative_prompt_replaces_the_empty_one(runs):
    pipe = genpix.load_pipeline(str(runs / "ldm"))
    three = pipe(prompt="a handwritten digit 3", cfg_scale=5, **SAMPLE).tensors
    seven = pipe(prompt="a handwritten digit 7", cfg_scale=5, **SAMPLE).tensors
    assert (three - seven).abs().max() > 1e-3
    negative = pipe(prompt="a handwritten digit 3", negative_prompt="a handwritten digit 1", cfg_scale=5, **SAMPLE)
    assert (negative.tensors - three).abs().max() > 1e-3
    # uncond + s (cond - uncond) = cond when the negative prompt is the prompt: the guidance's
    # unconditional branch is the negative prompt's
    self_negative = pipe(prompt="a handwritten digit 3", negative_prompt="a handwritten digit 3", cfg_scale=5, **SAMPLE)
    unguided = pipe(prompt="a handwritten digit 3", cfg_scale=1, **SAMPLE)
    torch.testing.assert_close(self_negative.tensors, unguided.tensors, rtol=0, atol=2e-3)


@pytest.mark.parametrize("cond, prompt", [("class", "7"), ("none", "")])
def test_class_and_unconditional_models_train_and_sample(runs, tmp_path, run_cli, cond, prompt):
    out = tmp_path / cond
    status, _, err = run_cli("train", "ldm", *LDM, "--autoencoder", runs / "ae", "--cond", cond, "--context-dim", "16",
                             "--steps", "2", "--out", out)
    assert status == 0, err
    pipe = genpix.load_pipeline(str(out))
    assert pipe(prompt=prompt, **SAMPLE).tensors.shape == (1, 1, 16, 16)
    wrong = "a cat"
    if cond == "class":  # `genpix sample --class 7` is the prompt "7"
        torch.testing.assert_close(pipe(class_name=7, **SAMPLE).tensors, pipe(prompt="7", **SAMPLE).tensors)
    message = "unknown class 'a cat'" if cond == "class" else "unconditional"
    with pytest.raises(genpix.errors.GenpixError, match=message):
        pipe(prompt=wrong, **SAMPLE)


@pytest.fixture
def uncaptioned(tmp_path):
    folder = tmp_path / "plain"
    folder.mkdir()
    for i in range(4):
        Image.fromarray(np.full((16, 16), 40 * i, dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


@pytest.mark.parametrize("args, message, code", [
    ([], "--autoencoder is required", 1),
    (["--autoencoder", "no-such-run"], "--autoencoder: no-such-run is not a model folder", 1),
    (["--autoencoder", "{runs}/ldm"], "holds a ldm model, not an autoencoder", 1),
    (["--autoencoder", "{runs}/ae", "--channels", "3"], "the autoencoder takes 1-channel images, the data has 3", 1),
    (["--autoencoder", "{runs}/ae", "--image-size", "12"], "image size 12 must be a multiple of 8", 1),
    (["--autoencoder", "{runs}/ae", "--data", "{plain}"], "--cond text needs captions, and", 1),
    (["--autoencoder", "{runs}/ae", "--text-encoder", "clip"], "invalid choice: 'clip'", 2),
    (["--autoencoder", "{runs}/ae", "--config", "{bad_config}"], "'clip' is not one of 'learned', 'minilm'", 1),
])
def test_bad_input_is_one_line(runs, uncaptioned, tmp_path, run_cli, args, message, code):
    bad_config = tmp_path / "bad.json"
    bad_config.write_text(json.dumps({"model": {"text_encoder": "clip"}}))
    args = [a.format(runs=runs, plain=uncaptioned, bad_config=bad_config) for a in args]
    status, _, err = run_cli("train", "ldm", *LDM, *args, "--steps", "1", "--out", tmp_path / "run")
    assert status == code and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "run").exists()


def test_resume_keeps_its_autoencoder(runs, tmp_path, run_cli):
    status, _, err = run_cli("train", "ldm", "--out", runs / "ldm", "--resume", "--autoencoder", runs / "ae")
    assert status == 1 and "leave --autoencoder and --init-from out" in err
    status, _, err = run_cli("train", "ldm", "--out", runs / "ldm", "--resume", "--init-from", runs / "ldm")
    assert status == 1 and "leave --autoencoder and --init-from out" in err


@pytest.mark.slow  # torchrun
@pytest.mark.parametrize("family", ["autoencoder", "ldm", "ldm --colour-token --colour-dropout 0"])
def test_two_processes_take_the_single_process_steps(runs, tmp_path, run_cli, family):
    # the distribute() hook: the global batch split over 2 gloo processes, the same noise per image; the
    # colour head learns outside the DDP forward, and its gradients are averaged all the same (without
    # dropout, whose masks come from the global RNG, seeded per rank)
    family, *flags = family.split()
    args = ([*AE, "--disc-start", "1"] if family == "autoencoder"
            else [*LDM, "--autoencoder", runs / "ae", "--lr-schedule", "constant", "--warmup-steps", "0", *flags])
    for name, nproc in (("one", []), ("two", ["--nproc", "2"])):
        status, _, err = run_cli("train", family, *args, "--steps", "3", "--out", tmp_path / name, *nproc)
        assert status == 0, err
    one, two = load_file(tmp_path / "one" / "model.safetensors"), load_file(tmp_path / "two" / "model.safetensors")
    assert one.keys() == two.keys()
    # a key bias shifts every logit of a query alike, so softmax attention gives it a zero gradient
    # but for float32 rounding, whose sign Adam's g / (sqrt(v) + eps) turns into steps of lr: not compared
    compared = [k for k in one if not k.endswith("to_k.bias")]
    for key in compared:
        assert torch.allclose(one[key], two[key], rtol=0, atol=1e-4), (key, (one[key] - two[key]).abs().max())


def test_frozen_minilm_text_encoder_trains_and_is_not_saved(runs, tmp_path, run_cli):
    out = tmp_path / "minilm"
    status, _, err = run_cli("train", "ldm", *LDM, "--autoencoder", runs / "ae", "--text-encoder", "minilm",
                             "--steps", "2", "--out", out)
    assert status == 0, err
    config = json.loads((out / "config.json").read_text())["model"]
    assert config["text_encoder"] == "minilm"
    weights = load_file(out / "model.safetensors")
    assert not any(".conditioner." in k for k in weights)  # the frozen encoder stays in its package
    assert weights["model.unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight"].shape[1] == 384
    pipe = genpix.load_pipeline(str(out))
    a, b = (pipe(prompt=p, cfg_scale=5, **SAMPLE).tensors for p in ("a handwritten digit 3", "a handwritten digit 7"))
    assert (a - b).abs().max() > 1e-3


def test_sampling_an_autoencoder_points_to_train_ldm(runs, run_cli):
    status, _, err = run_cli("sample", runs / "ae", "-n", "1", "-o", "unused")
    assert status == 1 and "does not generate on its own; train latent diffusion on it" in err


@pytest.mark.parametrize("args, message", [
    (["--image-size", "18"], "image size 18 must be a multiple of the autoencoder's downsampling factor 4"),
    (["--disc-start", "0", "--disc-layers", "3"], "a patch discriminator with 3 layers needs images of at least 24 px"),
    (["--norm-num-groups", "3"], "norm_num_groups 3 must divide every level's channels"),
])
def test_bad_autoencoder_input_is_one_line(tmp_path, run_cli, args, message):
    status, _, err = run_cli("train", "autoencoder", *AE, *args, "--steps", "1", "--out", tmp_path / "run")
    assert status == 1 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "run").exists()


def test_init_from_starts_from_the_models_ema_weights_and_its_autoencoder(runs, tmp_path, run_cli):
    out = tmp_path / "tuned"
    status, _, err = run_cli("train", "ldm", *LDM, "--init-from", runs / "ldm", "--steps", "1", "--lr", "1e-12",
                             "--warmup-steps", "0", "--out", out)
    assert status == 0, err
    tuned, source = load_file(out / "model.safetensors"), load_file(runs / "ldm" / "model.safetensors")
    # one step of lr 1e-12 (Adam moves each weight by about lr): the source's EMA weights as they were
    # loaded, and its first stage
    for key, value in tuned.items():
        role, rest = key.split(".", 1)
        expected = source[f"ema.{rest}"] if role in ("model", "ema") else source[key]
        assert torch.allclose(value, expected, rtol=0, atol=1e-9), key
    assert not all(torch.equal(source[f"ema.{k}"], source[f"model.{k}"]) for k in
                   (key.split(".", 1)[1] for key in source if key.startswith("model.")))  # EMA and live differ
    assert json.loads((out / "config.json").read_text())["model"]["first_stage"] == \
        json.loads((runs / "ldm" / "config.json").read_text())["model"]["first_stage"]


@pytest.mark.parametrize("args, message", [
    (["--init-from", "{runs}/ldm", "--autoencoder", "{runs}/ae"], "--init-from: the model's U-Net works in its own"),
    (["--init-from", "{runs}/ae"], "--init-from {runs}/ae: holds a autoencoder model, not an ldm model"),
    (["--init-from", "no-such-model"], "--init-from: no-such-model is not a model folder"),
    (["--init-from", "{runs}/ldm", "--block-out-channels", "16,16"], "--init-from (its U-Net and text encoder must"),
])
def test_bad_init_from_is_one_line(runs, tmp_path, run_cli, args, message):
    args = [a.format(runs=runs) for a in args]
    status, _, err = run_cli("train", "ldm", *LDM, *args, "--steps", "1", "--out", tmp_path / "run")
    assert status == 1 and message.format(runs=runs) in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "run").exists()


def test_init_from_takes_the_models_settings_so_only_the_data_is_needed(runs, tmp_path, run_cli):
    out = tmp_path / "tuned"
    status, _, err = run_cli("train", "ldm", *DATA, "--init-from", runs / "ldm", "--steps", "1", "--out", out)
    assert status == 0, err
    tuned, source = (json.loads((p / "config.json").read_text())["model"] for p in (out, runs / "ldm"))
    assert tuned == source
    status, _, err = run_cli("train", "ldm", *DATA, "--init-from", runs / "ldm", "--min-snr-gamma", "5",
                             "--steps", "1", "--out", tmp_path / "snr")
    assert status == 0, err
    assert json.loads((tmp_path / "snr" / "config.json").read_text())["model"]["min_snr_gamma"] == 5
