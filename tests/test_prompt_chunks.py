"""Weighted prompts of any length on the tiny SD pipelines of test_sd_pipeline.py
(pipelines/prompt_chunks.py, StableDiffusionPipeline.encode_prompt), as sd-webui encodes them:

- a plain prompt under 75 tokens is the embedding the pipeline gave before (bit for bit) and the one
  diffusers' encode_prompt gives (float rounding);
- a 100-token prompt is two 77-token chunks, each the text model on bos + its tokens + eos + padding;
- ``(words:1.5)`` is sd-webui's formula z w mean(z) / mean(z w), computed here directly;
- comma backtracking and BREAK place the chunk boundaries where sd-webui's tokenize_line does;
- a prompt and a negative prompt of different chunk counts are padded with the empty chunk and the
  images equal diffusers' from the same (padded) embeddings and latents.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_sd_pipeline import (CFG, NEGATIVE, PROMPT, SD_SCHEDULER, SEED, SIZE, STEPS, assert_same_images,  # noqa: F401
                              model, models, sd1, start_latents, vocab)

import genpix
from genpix.errors import GenpixError
from genpix.io.images import parse_infotext
from genpix.pipelines.prompt_chunks import chunk_prompt, empty_chunk


def token_ids(pipe, text: str) -> list[int]:
    return [pipe.parts.conditioner.tokenizer.encoder[s] for s in pipe.parts.conditioner.tokenizer.tokenize(text)]


def prompt_of(pipe, n: int, word_source: str = PROMPT) -> str:
    """A prompt of exactly n tokens, no commas: the words of ``word_source`` over and over."""
    words, text = word_source.split(), ""
    i = 0
    while len(token_ids(pipe, text)) < n:
        text = f"{text} {words[i % len(words)]}".strip()
        i += 1
    while len(token_ids(pipe, text)) > n:  # the last word had several tokens: pad with one-token words
        text = text.rsplit(" ", 1)[0]
    while len(token_ids(pipe, text)) < n:
        text += " a"
    assert len(token_ids(pipe, text)) == n
    return text


def encode_ids(pipe, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return pipe.parts.conditioner.text_model(torch.tensor([ids]), clip_skip=0).tokens


def test_plain_prompt_is_the_unchunked_embedding(model):
    """Weight 1, under 75 tokens: exactly the single 77-token encoding, and diffusers' to 1e-5."""
    kind, ref, folder = model
    pipe = genpix.load_pipeline(str(folder))
    with torch.no_grad():
        ours = pipe.encode_prompt(PROMPT)
        before = pipe.parts.conditioner.text_model(pipe.parts.conditioner.tokenizer([PROMPT]), clip_skip=0).tokens  # the pre-chunking path
        theirs = ref.encode_prompt(PROMPT, "cpu", 1, False)[0]
    assert ours.shape == (1, 77, 128)
    assert torch.equal(ours, before)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)
    with torch.no_grad():  # clip skip 2: the penultimate layer through the final LayerNorm, in transformers
        # (diffusers' own clip_skip path reads text_encoder.text_model, which transformers 5 flattened)
        hidden = ref.text_encoder(pipe.parts.conditioner.tokenizer([PROMPT]), output_hidden_states=True).hidden_states[-2]
        torch.testing.assert_close(pipe.encode_prompt(PROMPT, clip_skip=2), ref.text_encoder.final_layer_norm(hidden),
                                   rtol=0, atol=1e-5)


def test_a_100_token_prompt_is_two_chunks(model):
    kind, _, folder = model
    pipe = genpix.load_pipeline(str(folder))
    text = prompt_of(pipe, 100)
    ids = token_ids(pipe, text)
    tok = pipe.parts.conditioner.tokenizer
    with torch.no_grad():
        z = pipe.encode_prompt(text)
    assert z.shape == (1, 154, 128)
    first = [tok.bos_id, *ids[:75], tok.eos_id]
    second = [tok.bos_id, *ids[75:], tok.eos_id] + [tok.pad_id] * 50  # SD 2.x pads with "!" (0) after eos
    torch.testing.assert_close(z[:, :77], encode_ids(pipe, first), rtol=0, atol=0)
    torch.testing.assert_close(z[:, 77:], encode_ids(pipe, second), rtol=0, atol=0)
    assert len(chunk_prompt(tok, prompt_of(pipe, 75))) == 1 and len(chunk_prompt(tok, prompt_of(pipe, 76))) == 2


def test_emphasis_follows_sd_webuis_formula(sd1):
    """(words:1.5) multiplies those tokens' embeddings by 1.5, then the chunk is rescaled to its
    old mean (sd-webui's EmphasisOriginal); every other position changes by that factor only."""
    _, _, folder = sd1
    pipe = genpix.load_pipeline(str(folder))
    before, words, after = "a photo of ", "an astronaut", " riding a horse"
    ids = token_ids(pipe, before) + token_ids(pipe, words) + token_ids(pipe, after)
    assert ids == token_ids(pipe, before + words + after)  # the runs tokenize as the plain prompt
    with torch.no_grad():
        weighted = pipe.encode_prompt(f"{before}({words}:1.5){after}")
        z = pipe.encode_prompt(before + words + after)
    w = torch.ones(77)
    start = 1 + len(token_ids(pipe, before))
    w[start:start + len(token_ids(pipe, words))] = 1.5
    expected = z * w[None, :, None]
    expected = expected * (z.mean() / expected.mean())
    torch.testing.assert_close(weighted, expected, rtol=1e-6, atol=1e-6)
    assert not torch.allclose(weighted, z)
    with torch.no_grad():  # [x] and (x) are 1/1.1 and 1.1
        down, up = pipe.encode_prompt(f"{before}[{words}]{after}"), pipe.encode_prompt(f"{before}({words}){after}")
    for got, factor in ((down, 1 / 1.1), (up, 1.1)):
        w[start:start + len(token_ids(pipe, words))] = factor
        direct = z * w[None, :, None]
        torch.testing.assert_close(got, direct * (z.mean() / direct.mean()), rtol=1e-6, atol=1e-6)


def test_comma_backtrack_and_break_place_the_chunk_boundary(sd1):
    _, _, folder = sd1
    pipe = genpix.load_pipeline(str(folder))
    tok = pipe.parts.conditioner.tokenizer
    head, tail = prompt_of(pipe, 70), prompt_of(pipe, 10, "the sneaker photo")
    text = f"{head}, {tail}"  # 70 tokens, the comma (71st), 10 more: the chunk fills 4 tokens after it
    ids = token_ids(pipe, text)
    chunks = chunk_prompt(tok, text)
    assert len(chunks) == 2
    assert list(chunks[0].ids) == [tok.bos_id, *ids[:71], tok.eos_id] + [tok.pad_id] * 4  # cut after the comma
    assert list(chunks[1].ids[1:11]) == ids[71:]  # the words after the comma moved, whole
    no_backtrack = chunk_prompt(tok, text, comma_backtrack=0)
    assert list(no_backtrack[0].ids[1:76]) == ids[:75]  # plain 75-token cut
    broken = chunk_prompt(tok, "a photo BREAK of a horse")
    assert len(broken) == 2
    for chunk, words in zip(broken, ("a photo", "of a horse")):
        expected = [tok.bos_id, *token_ids(pipe, words), tok.eos_id]
        assert list(chunk.ids[:len(expected)]) == expected
    assert chunk_prompt(tok, "") == [empty_chunk(tok)]


def test_cfg_pads_the_shorter_prompt_and_matches_diffusers(sd1):
    """A 2-chunk prompt with a 1-chunk negative prompt: the negative is padded with the empty
    chunk, the U-Net attends to 154 tokens, and the images are diffusers' from the same embeddings."""
    _, ref, folder = sd1
    pipe = genpix.load_pipeline(str(folder))
    long = prompt_of(pipe, 100)
    with torch.no_grad():
        cond, uncond, padded = pipe.encode_prompts(long, NEGATIVE)
        empty = pipe.encode_prompt("")
    assert padded and cond.shape == uncond.shape == (1, 154, 128)
    torch.testing.assert_close(uncond[:, :77], pipe.encode_prompt(NEGATIVE), rtol=0, atol=0)
    torch.testing.assert_close(uncond[:, 77:], empty, rtol=0, atol=0)
    latents = start_latents()
    out = pipe(prompt=long, negative_prompt=NEGATIVE, steps=STEPS, sampler="DDIM", cfg_scale=CFG, seed=SEED,
               width=SIZE, height=SIZE, latents=latents)
    from diffusers import DDIMScheduler

    ref.scheduler = DDIMScheduler.from_config(SD_SCHEDULER)
    expected = ref(prompt_embeds=cond, negative_prompt_embeds=uncond, num_inference_steps=STEPS,
                   guidance_scale=CFG, height=SIZE, width=SIZE, latents=latents,
                   generator=torch.Generator().manual_seed(SEED), output_type="np").images
    assert_same_images(out, expected)
    assert parse_infotext(out.infotexts[0])["Pad conds"] == "True"
    assert "Pad conds" not in parse_infotext(pipe(prompt=PROMPT, steps=1, width=SIZE, height=SIZE).infotexts[0])
    short = pipe(prompt=PROMPT, negative_prompt=long, steps=1, width=SIZE, height=SIZE)  # the other way round
    assert np.isfinite(short.tensors.numpy()).all()


def test_a_weight_beyond_the_range_is_a_one_line_error(sd1):
    _, _, folder = sd1
    pipe = genpix.load_pipeline(str(folder))
    with pytest.raises(GenpixError, match=r"prompt weight 20 of 'horse' is outside the sane range \[-10, 10\]"):
        pipe(prompt="a (horse:20)", steps=1, width=SIZE, height=SIZE)
