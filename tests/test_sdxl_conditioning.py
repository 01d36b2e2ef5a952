"""SDXL's conditioner (pipelines/sdxl_conditioning.py) against diffusers' StableDiffusionXLPipeline
encode_prompt and _get_add_time_ids on tiny random text encoders (tests/sdxl_fixtures.py)."""

from __future__ import annotations

import pytest
import torch
from sdxl_fixtures import tiny_sdxl
from test_tokenizer import write_folder

from genpix.errors import GenpixError
from genpix.models.text import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection
from genpix.models.tokenizer import CLIPTokenizer
from genpix.pipelines.sdxl_conditioning import MicroConditioning, SDXLConditioner

PROMPT, NEGATIVE = "a photo of an astronaut riding a horse on the moon", "a painting, blurry"


def ours_from(pipe, tmp_path, refiner: bool = False) -> SDXLConditioner:
    from sdxl_fixtures import vocab

    tokens, merges = vocab()
    tok_2 = CLIPTokenizer.from_folder(write_folder(tmp_path / "tok2", tokens, merges, pad="!"))
    hf_2 = pipe.text_encoder_2
    model_2 = CLIPTextModelWithProjection(CLIPTextConfig.from_transformers(hf_2.config.to_dict()),
                                          hf_2.config.projection_dim)
    model_2.load_transformers_state_dict(hf_2.state_dict())
    tok = model = None
    if pipe.text_encoder is not None:
        tok = CLIPTokenizer.from_folder(write_folder(tmp_path / "tok", tokens, merges))
        model = CLIPTextModel(CLIPTextConfig.from_transformers(pipe.text_encoder.config.to_dict()))
        model.load_transformers_state_dict(pipe.text_encoder.state_dict())
    return SDXLConditioner(tok, model and model.eval(), tok_2, model_2.eval(), refiner=refiner)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("xl")
    pipe = tiny_sdxl(tmp, "base")
    return pipe, ours_from(pipe, tmp)


@torch.no_grad()
def test_prompt_and_negative_equal_diffusers_encode_prompt(base):
    pipe, ours = base
    embeds, negative, pooled, negative_pooled = pipe.encode_prompt(PROMPT, negative_prompt=NEGATIVE,
                                                                   device="cpu")
    cond, uncond, notes = ours.with_size(48, 32).encode_pair(PROMPT, NEGATIVE)
    assert set(cond) == set(uncond) == {"context", "text_embeds", "time_ids"} and notes == {}
    assert cond["context"].shape == (1, 77, 192)  # CLIP-L 64 then bigG 128, concatenated
    for key, want in [("context", embeds), ("text_embeds", pooled)]:
        torch.testing.assert_close(cond[key], want, rtol=1e-5, atol=1e-5)
    for key, want in [("context", negative), ("text_embeds", negative_pooled)]:
        torch.testing.assert_close(uncond[key], want, rtol=1e-5, atol=1e-5)
    time_ids = pipe._get_add_time_ids((32, 48), (0, 0), (32, 48), torch.float32, text_encoder_projection_dim=128)
    torch.testing.assert_close(cond["time_ids"], time_ids)  # (h, w, top, left, h, w) = (32, 48, 0, 0, 32, 48)
    torch.testing.assert_close(uncond["time_ids"], time_ids)
    other = ours.with_size(48, 32, MicroConditioning(original_size=(512, 256), crop_top_left=(8, 4)))
    assert other.encode(PROMPT)["time_ids"].tolist() == [[512, 256, 8, 4, 32, 48]]


@torch.no_grad()
def test_empty_negative_prompt_is_zeroed_as_sd_webui_and_diffusers_none(base):
    pipe, ours = base
    _, negative, _, negative_pooled = pipe.encode_prompt(PROMPT, negative_prompt=None, device="cpu")
    assert negative.abs().max() == 0 and negative_pooled.abs().max() == 0  # force_zeros_for_empty_prompt
    _, uncond, _ = ours.encode_pair(PROMPT, "")
    torch.testing.assert_close(uncond["context"], negative)
    torch.testing.assert_close(uncond["text_embeds"], negative_pooled)
    assert uncond["time_ids"].abs().max() > 0  # the micro-conditioning stays
    kept = SDXLConditioner(ours.tokenizer, ours.text_model, ours.tokenizer_2, ours.text_model_2,
                           zero_empty_negative=False).encode_pair(PROMPT, "")[1]
    explicit = pipe.encode_prompt(PROMPT, negative_prompt="", device="cpu")  # diffusers encodes an explicit ""
    torch.testing.assert_close(kept["context"], explicit[1], rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_break_chunks_emphasis_and_pooled_from_the_first_chunk(base):
    """sd-webui: each chunk encoded on its own on both encoders; the pooled vector is the first
    chunk's, before emphasis; emphasis changes the context only."""
    _, ours = base
    first, second = ours.encode("a photo of a cat"), ours.encode("the moon")
    both = ours.encode("a photo of a cat BREAK the moon")
    assert both["context"].shape == (1, 154, 192)
    torch.testing.assert_close(both["context"], torch.cat([first["context"], second["context"]], 1))
    torch.testing.assert_close(both["text_embeds"], first["text_embeds"])
    weighted = ours.encode("a photo of a (cat:1.5)")
    torch.testing.assert_close(weighted["text_embeds"], first["text_embeds"])
    assert (weighted["context"] - first["context"]).abs().max() > 1e-3
    cond, uncond, notes = ours.encode_pair("a photo of a cat BREAK the moon", NEGATIVE)
    assert uncond["context"].shape == (1, 154, 192) and notes == {"Pad conds": True}
    torch.testing.assert_close(uncond["context"][:, 77:], ours.encode("")["context"])


@torch.no_grad()
def test_refiner_uses_bigg_alone_and_aesthetic_scores(tmp_path):
    pipe = tiny_sdxl(tmp_path, "refiner")
    ours = ours_from(pipe, tmp_path, refiner=True)
    embeds, negative, pooled, negative_pooled = pipe.encode_prompt(PROMPT, negative_prompt=NEGATIVE, device="cpu")
    cond, uncond, _ = ours.with_size(48, 32).encode_pair(PROMPT, NEGATIVE)
    assert cond["context"].shape == (1, 77, 128)
    for got, want in [(cond["context"], embeds), (cond["text_embeds"], pooled), (uncond["context"], negative),
                      (uncond["text_embeds"], negative_pooled)]:
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    ids, negative_ids = pipe._get_add_time_ids((32, 48), (0, 0), (32, 48), 6.0, 2.5, (32, 48), (0, 0), (32, 48),
                                               torch.float32, text_encoder_projection_dim=128)
    torch.testing.assert_close(cond["time_ids"], ids)  # (h, w, top, left, 6.0)
    torch.testing.assert_close(uncond["time_ids"], negative_ids)  # the negative aesthetic score 2.5


def test_bad_setups_are_refused(base):
    _, ours = base
    with pytest.raises(GenpixError, match="must pad with '!'"):
        SDXLConditioner(ours.tokenizer, ours.text_model, ours.tokenizer, ours.text_model_2)
    with pytest.raises(GenpixError, match="clip_skip must be between 1 and 1"):
        ours.encode(PROMPT, clip_skip=2)
