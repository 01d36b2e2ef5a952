"""Text encoders: the CLIP text transformer against transformers' CLIPTextModel, the small learned
encoder, and the frozen all-MiniLM-L6-v2 sentence encoder (offline)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import save_file

from genpix.models.text import (
    CLIPTextConfig,
    CLIPTextEncoder,
    CLIPTextModel,
    CLIPTextTransformer,
    SmallTextEncoder,
    SmallTextEncoderConfig,
    TextEncoderError,
    build_text_encoder,
)
from genpix.models.tokenizer import ByteTokenizer

TINY = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
            vocab_size=1000, max_position_embeddings=77, layer_norm_eps=1e-5)


def hf_model(hidden_act: str, eos_token_id: int):
    from transformers import CLIPTextConfig as HFConfig
    from transformers import CLIPTextModel as HFModel

    torch.manual_seed(0)
    config = HFConfig(**TINY, hidden_act=hidden_act, eos_token_id=eos_token_id, bos_token_id=0, pad_token_id=1)
    return HFModel(config).eval()


def prompt_ids(eos: int, pad: int) -> torch.Tensor:
    """(3, 77): bos 0, random tokens, eos at different places, then pad (the tokenizer's layout)."""
    g = torch.Generator().manual_seed(1)
    ids = torch.full((3, 77), pad, dtype=torch.int64)
    for row, length in enumerate((5, 30, 75)):
        ids[row, 0] = 0
        ids[row, 1 : length + 1] = torch.randint(3, 998, (length,), generator=g)
        ids[row, length + 1] = eos
    return ids


@pytest.mark.parametrize("hidden_act,eos,pad", [("quick_gelu", 999, 999), ("gelu", 999, 1), ("quick_gelu", 2, 1)],
                         ids=["sd1-quick_gelu", "sd2-gelu-pad", "legacy-eos2"])
def test_clip_matches_transformers(hidden_act, eos, pad):
    hf = hf_model(hidden_act, eos)
    ours = CLIPTextModel(CLIPTextConfig(**TINY, hidden_act=hidden_act, eos_token_id=eos))
    ours.load_transformers_state_dict(hf.state_dict())
    ids = prompt_ids(eos if eos != 2 else 999, pad)  # legacy: pooled at the largest id
    with torch.no_grad():
        want = hf(ids, output_hidden_states=True)
        last = ours(ids)
        penultimate = ours(ids, clip_skip=1)
    torch.testing.assert_close(last.tokens, want.last_hidden_state, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(last.pooled, want.pooler_output, rtol=1e-5, atol=1e-5)
    # SD 2.x / clip_skip: hidden_states[-2] through the final LayerNorm, as diffusers does
    torch.testing.assert_close(penultimate.tokens, hf.final_layer_norm(want.hidden_states[-2]),
                               rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(penultimate.pooled, want.pooler_output, rtol=1e-5, atol=1e-5)


def test_clip_padding_mask_matches_transformers():
    hf = hf_model("gelu", 999)
    ours = CLIPTextModel(CLIPTextConfig(**TINY, hidden_act="gelu", eos_token_id=999))
    ours.load_transformers_state_dict(hf.state_dict())
    ids = prompt_ids(999, 1)
    mask = (torch.arange(77) < torch.tensor([[7], [32], [77]])).long()
    with torch.no_grad():
        want = hf(ids, attention_mask=mask)
        got = ours(ids, attention_mask=mask)
    torch.testing.assert_close(got.tokens, want.last_hidden_state, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got.pooled, want.pooler_output, rtol=1e-5, atol=1e-5)


def test_diffusers_text_encoder_folder_loads_without_renaming(tmp_path):
    hf = hf_model("quick_gelu", 999)
    names = set(CLIPTextModel(CLIPTextConfig(**TINY, eos_token_id=999)).state_dict())
    assert "text_model.embeddings.token_embedding.weight" in names
    assert "text_model.encoder.layers.1.self_attn.q_proj.weight" in names
    assert "text_model.final_layer_norm.bias" in names
    # The layout diffusers' hub folders hold (written by transformers 4): text_model.* plus position_ids.
    state = {f"text_model.{k}": v.half() for k, v in hf.state_dict().items()}  # an fp16 checkpoint
    state["text_model.embeddings.position_ids"] = torch.arange(77)[None]
    assert set(state) - names == {"text_model.embeddings.position_ids"}
    folder = tmp_path / "text_encoder"
    folder.mkdir()
    save_file(state, folder / "model.safetensors")
    (folder / "config.json").write_text(json.dumps(hf.config.to_dict()))
    loaded = CLIPTextModel.from_folder(folder)
    hf.load_state_dict({k: v.half().float() for k, v in hf.state_dict().items()})  # the same rounded weights
    assert loaded.config.hidden_act == "quick_gelu" and loaded.config.num_hidden_layers == 2
    assert loaded.text_model.final_layer_norm.weight.dtype == torch.float32
    ids = prompt_ids(999, 999)
    with torch.no_grad():
        want = hf(ids).last_hidden_state
    torch.testing.assert_close(loaded(ids).tokens, want, rtol=1e-5, atol=1e-5)

    hf.save_pretrained(tmp_path / "saved")  # transformers 5's own layout, no text_model. prefix
    torch.testing.assert_close(CLIPTextModel.from_folder(tmp_path / "saved")(ids).tokens, want,
                               rtol=1e-5, atol=1e-5)


def test_clip_bad_weights_and_arguments_are_named():
    model = CLIPTextModel(CLIPTextConfig(**TINY, eos_token_id=999))
    state = model.state_dict()
    state["text_model.encoder.layers.0.mlp.fc1.weight"] = torch.zeros(5, 32)
    with pytest.raises(TextEncoderError, match=r"layers\.0\.mlp\.fc1\.weight has shape \(5, 32\), expected \(37, 32\)"):
        model.load_transformers_state_dict(state)
    del state["text_model.final_layer_norm.bias"]
    with pytest.raises(TextEncoderError, match="missing.*final_layer_norm.bias"):
        model.load_transformers_state_dict(state)
    with pytest.raises(TextEncoderError, match=r"clip_skip must be in 0\.\.1"):
        model(prompt_ids(999, 999), clip_skip=2)
    with pytest.raises(ValueError, match="not divisible"):
        CLIPTextConfig(hidden_size=30, num_attention_heads=4)
    with pytest.raises(TextEncoderError, match="no config.json"):
        CLIPTextModel.from_folder("/nonexistent")
    assert CLIPTextConfig.sd2().num_hidden_layers == 23 and CLIPTextConfig.sd2().hidden_act == "gelu"


def test_truncated_weights_file_is_a_clear_error(tmp_path):
    model = CLIPTextModel(CLIPTextConfig(**TINY, eos_token_id=999))
    save_file(model.state_dict(), tmp_path / "model.safetensors")
    data = (tmp_path / "model.safetensors").read_bytes()
    (tmp_path / "model.safetensors").write_bytes(data[: len(data) // 2])
    (tmp_path / "config.json").write_text(json.dumps({**TINY, "eos_token_id": 999, "model_type": "clip_text_model"}))
    with pytest.raises(TextEncoderError, match="cannot read the text encoder weights"):
        CLIPTextModel.from_folder(tmp_path)


def test_clip_text_encoder_joins_tokenizer_and_model(tmp_path):
    from test_tokenizer import CORPUS, train_bpe, write_folder

    from genpix.models.tokenizer import CLIPTokenizer

    tokens, merges = train_bpe(CORPUS, 40)
    tokenizer = CLIPTokenizer.from_folder(write_folder(tmp_path / "tok", tokens, merges))
    torch.manual_seed(0)
    model = CLIPTextModel(CLIPTextConfig(**{**TINY, "vocab_size": tokenizer.vocab_size},
                                         eos_token_id=tokenizer.eos_id))
    out = CLIPTextEncoder(tokenizer, model)(["a photo of the moon", ""])
    assert out.tokens.shape == (2, 77, 32) and out.pooled.shape == (2, 32)
    ids = tokenizer(["a photo of the moon", ""])
    eos = (ids == tokenizer.eos_id).int().argmax(1)
    assert eos[1] == 1 and eos[0] > 4
    torch.testing.assert_close(out.pooled, model(ids).tokens[[0, 1], eos])  # pooled = tokens at eos


def test_small_encoder_reuses_clip_layers_and_learns():
    config = SmallTextEncoderConfig(width=32, layers=2, heads=4, max_length=24)
    torch.manual_seed(0)
    encoder = SmallTextEncoder(config)
    assert isinstance(encoder.transformer, CLIPTextTransformer)
    assert encoder.transformer.embeddings.token_embedding.num_embeddings == ByteTokenizer.vocab_size
    prompts = ["a red circle", "a blue square above", ""]
    out = encoder(prompts)
    assert out.tokens.shape == (3, 24, 32) and out.pooled.shape == (3, 32)
    # a few steps pull the pooled vectors apart: gradients reach every parameter
    optimizer = torch.optim.Adam(encoder.parameters(), lr=1e-2)
    target = torch.eye(3, 32)
    losses = []
    for _ in range(30):
        loss = torch.nn.functional.mse_loss(encoder(prompts).pooled, target)
        optimizer.zero_grad()
        loss.backward()
        losses.append(loss.item())
        optimizer.step()
    assert losses[-1] < 0.5 * losses[0]
    assert all(p.grad is not None for p in encoder.parameters())
    with pytest.raises(ValueError, match="max_length must be at least 2"):
        SmallTextEncoderConfig(max_length=1)
    with pytest.raises(TextEncoderError, match="unknown text encoder 'bert'; choose one of minilm, learned"):
        build_text_encoder("bert")


SENTENCE_CHECK = textwrap.dedent("""
    import torch
    from genpix.models.text import build_text_encoder
    encoder = build_text_encoder("minilm")
    out = encoder(["a photo of a sneaker", "a sneaker photo", "a bowl of soup on a wooden table"])
    assert out.tokens.shape == (3, 77, 384) and out.pooled.shape == (3, 384), out.tokens.shape
    assert out.mask[0].sum() == 8 and not any(p.requires_grad for p in encoder.parameters())
    sim = out.pooled @ out.pooled.T
    print("similarity", sim[0, 1].item(), sim[0, 2].item(), sim[1, 2].item())
    assert sim[0, 1] > 0.8 and sim[0, 1] > sim[0, 2] + 0.3 and sim[0, 1] > sim[1, 2] + 0.3
""")


def test_sentence_encoder_offline_and_semantic(tmp_path):
    """all-MiniLM-L6-v2 from the installed package with the hub off and an empty cache."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"),
           "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", SENTENCE_CHECK], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "similarity" in done.stdout


def test_sentence_encoder_matches_sentence_transformers():
    from sentence_transformers import SentenceTransformer

    from genpix.models.text import SentenceEncoder, minilm_folder

    prompts = ["a photo of a sneaker", "A red circle above a blue square!", ""]
    ours = SentenceEncoder()
    ours.train()  # stays frozen: no dropout
    assert not ours.bert.training
    reference = SentenceTransformer(str(minilm_folder()), device="cpu")
    want = torch.as_tensor(reference.encode(prompts, convert_to_numpy=True))
    torch.testing.assert_close(ours(prompts).pooled, want, rtol=1e-4, atol=1e-5)


def test_sentence_encoder_cache_gives_the_uncached_rows():
    from genpix.models.text import SentenceEncoder

    encoder = SentenceEncoder(cache_size=3)
    first = encoder(["a coat", "a bag", "a coat"])  # a repeated prompt is encoded once
    assert len(encoder._cache) == 2
    again = encoder(["a bag", "a dress", "a coat"])  # one new prompt, two from the cache
    fresh = SentenceEncoder(cache_size=0)(["a bag", "a dress", "a coat"])  # 0: nothing is kept
    for got, want in ((again.tokens, fresh.tokens), (again.pooled, fresh.pooled), (again.mask, fresh.mask)):
        torch.testing.assert_close(got, want)
    torch.testing.assert_close(first.tokens[0], first.tokens[2])
    encoder(["a sandal", "a shirt"])  # past cache_size: the cache starts over
    assert len(encoder._cache) <= 3
