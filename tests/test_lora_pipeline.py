"""Whole images: ``genpix.load_pipeline(folder, lora_dir=..., embeddings_dir=...)`` with
``<lora:NAME:W>`` and an embedding's word in the prompt, against diffusers with the same LoRA fused
at W (``load_lora_weights`` + ``fuse_lora``; the text-encoder part by the formula, see test_lora.py)
and the same embedding loaded (``load_textual_inversion``), on the tiny SD 1.x fixture: within 3/255.
The next prompt without the tag gives the plain model's image again."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from test_lora import fused, kohya_lora
from test_sd_pipeline import SIZE, start_latents, tiny_diffusers, vocab  # noqa: F401

import genpix
from genpix.io.images import parse_infotext
from genpix.io.embeddings import file_hash
from genpix.io.lora_files import short_hash

STEPS, CFG, SEED = 4, 7.5, 3
NEGATIVE = "a painting, blurry"


@pytest.fixture(scope="module")
def sd1(tmp_path_factory, vocab):  # noqa: F811
    tmp = tmp_path_factory.mktemp("sd1")
    ref = tiny_diffusers(tmp, vocab, "sd1")
    ref.save_pretrained(tmp / "model")
    return ref, tmp / "model"


def images_of(ref, prompt: str, latents: torch.Tensor) -> np.ndarray:
    return ref(prompt, negative_prompt=NEGATIVE, num_inference_steps=STEPS, guidance_scale=CFG, height=SIZE,
               width=SIZE, latents=latents, generator=torch.Generator().manual_seed(SEED), output_type="np").images


@pytest.mark.parametrize("kind", ["pt", "safetensors"])
def test_lora_and_embedding_images_match_diffusers(sd1, tmp_path, kind):
    from diffusers import DDIMScheduler

    ref, folder = sd1
    lora_dir, emb_dir = tmp_path / "Lora", tmp_path / "embeddings"
    lora_dir.mkdir()
    emb_dir.mkdir()
    state = kohya_lora(ref, rank=4, alpha=2.0, convs=True)
    save_file(state, str(lora_dir / "inkstyle.safetensors"))
    vectors = torch.randn(2, 128, generator=torch.Generator().manual_seed(4)) * 0.5
    if kind == "pt":
        emb = emb_dir / "zorbstyle.pt"
        torch.save({"string_to_param": {"*": vectors}, "name": "x", "step": 10}, emb)
    else:
        emb = emb_dir / "zorbstyle.safetensors"
        save_file({"emb_params": vectors}, str(emb))
    weight = 0.7
    expected_pipe = fused(ref, state, weight, tmp_path)
    expected_pipe.load_textual_inversion(str(emb), token="zorbstyle")
    expected_pipe.scheduler = DDIMScheduler.from_config(expected_pipe.scheduler.config)
    latents = start_latents()
    prompt = "a photo of zorbstyle riding a horse"
    expected = images_of(expected_pipe, prompt, latents)
    pipe = genpix.load_pipeline(str(folder), lora_dir=str(lora_dir), embeddings_dir=str(emb_dir))
    out = pipe(prompt=f"{prompt} <lora:inkstyle:{weight}>", negative_prompt=NEGATIVE, steps=STEPS, sampler="DDIM",
               cfg_scale=CFG, seed=SEED, width=SIZE, height=SIZE, latents=latents)
    ours = out.tensors.permute(0, 2, 3, 1).numpy()
    assert np.abs(ours - expected).max() < 3 / 255
    assert f"inkstyle: {short_hash(lora_dir / 'inkstyle.safetensors')}" in out.infotexts[0]
    assert f'TI hashes: "zorbstyle: {file_hash(emb)}"' in out.infotexts[0]
    assert parse_infotext(out.infotexts[0])["Prompt"].endswith(f"<lora:inkstyle:{weight}>")
    plain = pipe(prompt="a photo of a horse", negative_prompt=NEGATIVE, steps=STEPS, sampler="DDIM", cfg_scale=CFG,
                 seed=SEED, width=SIZE, height=SIZE, latents=latents)
    fresh = genpix.load_pipeline(str(folder))(prompt="a photo of a horse", negative_prompt=NEGATIVE, steps=STEPS,
                                              sampler="DDIM", cfg_scale=CFG, seed=SEED, width=SIZE, height=SIZE,
                                              latents=latents)
    assert torch.equal(plain.tensors, fresh.tensors)  # nothing leaked into the next request
    assert "Lora hashes" not in plain.infotexts[0] and "TI hashes" not in plain.infotexts[0]


def test_cli_lora_flags_and_bad_names(sd1, tmp_path, capsys):
    """genpix generate --lora PATH:W gives the same picture as <lora:NAME:W>; unknown names and
    weights that are not numbers are one-line errors."""
    from PIL import Image

    from genpix.cli import main
    from genpix.io.images import read_infotext

    ref, folder = sd1
    lora_dir = tmp_path / "Lora"
    lora_dir.mkdir()
    save_file(kohya_lora(ref, rank=2, alpha=2.0), str(lora_dir / "inkstyle.safetensors"))
    common = ["--model", str(folder), "--steps", "2", "--width", str(SIZE), "--height", str(SIZE), "--seed", "1",
              "--no-safety-checker"]
    assert main(["generate", "a horse", *common, "--lora", f"{lora_dir / 'inkstyle.safetensors'}:0.5",
                 "-o", str(tmp_path / "a")]) == 0
    assert main(["generate", "a horse <lora:inkstyle:0.5>", *common, "--lora-dir", str(lora_dir),
                 "-o", str(tmp_path / "b")]) == 0
    a, b = (sorted((tmp_path / d).glob("*.png"))[0] for d in "ab")
    assert np.array_equal(np.asarray(Image.open(a)), np.asarray(Image.open(b)))
    assert "Lora hashes" in read_infotext(b)
    capsys.readouterr()
    assert main(["generate", "a horse <lora:inkstyl:1>", *common, "--lora-dir", str(lora_dir),
                 "-o", str(tmp_path / "c")]) != 0
    err = capsys.readouterr().err
    assert "no LoRA named 'inkstyl'" in err and "close names: inkstyle" in err and len(err.strip().splitlines()) == 1
    assert main(["generate", "a horse <lora:inkstyle:lots>", *common, "--lora-dir", str(lora_dir),
                 "-o", str(tmp_path / "d")]) != 0
    assert "is not a number" in capsys.readouterr().err
