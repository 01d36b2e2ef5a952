"""``genpix train lora``: a LoRA trained on a tiny random SD 1.x fixture, written as a kohya file
that diffusers' load_lora_weights reads and that genpix applies as ``<lora:NAME:1>``: the U-Net
outputs agree to float32 rounding; resuming continues the run; the text-encoder layers are in
kohya's names."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file
from test_sd_pipeline import tiny_diffusers, vocab  # noqa: F401  (the vocab fixture)

from genpix.cli import main
from genpix.io.sd_loader import load_sd_components
from genpix.pipelines.extra_networks import NetworkLibrary, parse_prompt_networks


@pytest.fixture(scope="module")
def base(tmp_path_factory, vocab):  # noqa: F811
    tmp = tmp_path_factory.mktemp("base")
    ref = tiny_diffusers(tmp, vocab, "sd1")
    ref.save_pretrained(tmp / "model")
    pictures = tmp / "pictures"
    pictures.mkdir()
    rng = np.random.default_rng(0)
    for i, caption in enumerate(["a red circle", "a blue square", "a photo of a horse", "a red square"]):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(pictures / f"{i}.png")
        (pictures / f"{i}.txt").write_text(caption)
    return ref, tmp / "model", pictures


def train(base_folder, pictures, out, *extra) -> int:
    return main(["train", "lora", "--base", str(base_folder), "--data", str(pictures), "--out", str(out),
                 "--steps", "3", "--batch-size", "2", "--lr", "1e-2", "--rank", "4", "--alpha", "2",
                 "--quiet", *extra])


def test_trained_lora_loads_in_diffusers_and_genpix(base, tmp_path):
    ref, folder, pictures = base
    out = tmp_path / "runs" / "mystyle"
    assert train(folder, pictures, out, "--text-encoder", "frozen", "--targets", "transformer+conv") == 0
    path = out / "mystyle.safetensors"
    state = load_file(str(path))
    assert any(".resnets_" in k or "_resnets_" in k for k in state)  # LoCon layers
    assert all(k.startswith("lora_unet_") for k in state) and any(v.abs().max() > 0 for k, v in state.items()
                                                                  if "lora_up" in k)  # it learned
    with safe_open(str(path), "pt") as handle:
        assert handle.metadata()["ss_network_dim"] == "4"
    pipe = copy.deepcopy(ref)
    pipe.load_lora_weights(str(out), weight_name=path.name)
    pipe.fuse_lora(lora_scale=1.0, components=["unet"])
    parts = load_sd_components(folder)
    (tmp_path / "Lora").mkdir()
    (tmp_path / "Lora" / path.name).write_bytes(path.read_bytes())
    clean, specs = parse_prompt_networks("a horse <lora:mystyle:1>")
    x, t = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(0)), torch.tensor([500.0])
    context = torch.randn(1, 77, 128, generator=torch.Generator().manual_seed(1))
    with torch.no_grad(), NetworkLibrary(tmp_path / "Lora").applied(parts.unet, {"lora_te_": parts.text_model},
                                                                       specs):
        ours = parts.unet(x, t, context)
    with torch.no_grad():
        theirs = pipe.unet(x, t, encoder_hidden_states=context).sample
        plain = ref.unet(x, t, encoder_hidden_states=context).sample
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)
    assert (theirs - plain).abs().max() > 1e-4
    # whole images: genpix generate's path with <lora:mystyle:1> against diffusers with it fused
    from diffusers import DDIMScheduler

    import genpix

    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    latents = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(2))
    expected = pipe("a photo of a horse", negative_prompt="", num_inference_steps=3, guidance_scale=5.0, height=32,
                    width=32, latents=latents, output_type="np").images
    out = genpix.load_pipeline(str(folder), lora_dir=str(tmp_path / "Lora"))(
        prompt="a photo of a horse <lora:mystyle:1>", steps=3, sampler="DDIM", cfg_scale=5.0, width=32, height=32,
        latents=latents)
    assert np.abs(out.tensors.permute(0, 2, 3, 1).numpy() - expected).max() < 3 / 255


def test_text_encoder_layers_and_resume(base, tmp_path):
    _, folder, pictures = base
    out = tmp_path / "run"
    assert train(folder, pictures, out, "--checkpoint-every", "2") == 0
    state = load_file(str(out / "run.safetensors"))
    assert "lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight" in state
    assert "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k.alpha" in state
    assert main(["train", "lora", "--out", str(out), "--resume", "--steps", "4", "--quiet"]) == 0
    assert (out / "checkpoints" / "step-00000004").is_dir()


def test_bad_base_is_one_line(tmp_path, capsys, base):
    _, _, pictures = base
    assert train(tmp_path / "nothing.safetensors", pictures, tmp_path / "r") != 0
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.slow  # real torchrun processes
def test_two_processes_train_the_single_process_lora(base, tmp_path):
    """--nproc 2 (torchrun, gloo): the LoRA layers through DDP; the same global batch and noise per
    image give the single-process run's weights, to float32 rounding magnified by Adam."""
    _, folder, pictures = base
    flags = ["--device", "cpu", "--text-encoder", "frozen"]
    assert train(folder, pictures, tmp_path / "one", *flags) == 0
    assert train(folder, pictures, tmp_path / "two", *flags, "--nproc", "2") == 0
    one = load_file(str(tmp_path / "one" / "one.safetensors"))
    two = load_file(str(tmp_path / "two" / "two.safetensors"))
    assert one.keys() == two.keys()
    # Adam turns float32 rounding in a near-zero gradient into a full lr-sized step of either sign, so
    # a few elements differ by up to ~lr: measured mean |difference| 8e-7, max 1.1e-3 where the
    # zero-initialised up weights moved by up to 3e-2 in 3 steps at lr 1e-2
    difference = torch.cat([(one[k] - two[k]).abs().flatten() for k in one])
    moved = max(two[k].abs().max() for k in two if "lora_up" in k)
    assert difference.mean() < 1e-5 and difference.max() < 0.1 * moved and moved > 1e-3
