"""Textual-inversion embeddings: read as sd-webui does, encoded as diffusers' load_textual_inversion.

The tiny SD 1.x fixture of test_sd_pipeline.py; random embeddings of 1 and 3 vectors saved as
sd-webui ``.pt`` (``string_to_param``) and ``.safetensors`` (``emb_params``). diffusers loads the
same file with ``load_textual_inversion(path, token=stem)`` and encodes the prompt: genpix's
prompt_chunks encoding (word = file stem, vectors in place of the word's tokens) must give the
same (1, 77, D) context. Chunk accounting (n vectors count as n tokens, never split) and bad
input (wrong width, pickled code) are checked directly.
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file
from test_sd_pipeline import tiny_diffusers, vocab  # noqa: F401  (the vocab fixture)

from genpix.io.embeddings import EmbeddingError, EmbeddingFolder, read_embedding
from genpix.io.sd_loader import load_sd_components
from genpix.pipelines.prompt_chunks import chunk_prompt, encode_chunks

WIDTH = 128  # the fixture's text width


@pytest.fixture(scope="module")
def sd1(tmp_path_factory, vocab):  # noqa: F811
    tmp = tmp_path_factory.mktemp("sd1")
    ref = tiny_diffusers(tmp, vocab, "sd1")
    ref.save_pretrained(tmp / "model")
    return ref, load_sd_components(tmp / "model")


def write_embedding(folder, name: str, vectors: torch.Tensor, kind: str):
    folder.mkdir(exist_ok=True)
    if kind == "pt":
        path = folder / f"{name}.pt"
        torch.save({"string_to_token": {"*": 265}, "string_to_param": {"*": vectors}, "name": "inner-name",
                    "step": 500, "sd_checkpoint": "abcdef12", "sd_checkpoint_name": "base"}, path)
    else:
        path = folder / f"{name}.safetensors"
        save_file({"emb_params": vectors}, str(path))
    return path


@pytest.mark.parametrize("kind, count", [("pt", 1), ("safetensors", 3)])
def test_embedding_matches_diffusers_textual_inversion(sd1, tmp_path, kind, count):
    import copy

    ref, parts = sd1
    vectors = torch.randn(count, WIDTH, generator=torch.Generator().manual_seed(count))
    path = write_embedding(tmp_path / "embeddings", "zorbstyle", vectors, kind)
    prompt = "a painting of a horse in zorbstyle, on the moon"
    pipe = copy.deepcopy(ref)
    pipe.load_textual_inversion(str(path), token="zorbstyle")
    with torch.no_grad():
        expected = pipe.encode_prompt(prompt, "cpu", 1, False)[0]
    loaded, skipped = EmbeddingFolder(tmp_path / "embeddings").for_model({"": WIDTH})
    assert list(loaded) == ["zorbstyle"] and not skipped
    chunks = chunk_prompt(parts.tokenizer, prompt, embeddings={n: e.vectors for n, e in loaded.items()})
    assert len(chunks) == 1 and chunks[0].fixes and chunks[0].fixes[0][1] == "zorbstyle"
    with torch.no_grad():
        got = encode_chunks(parts.text_model, chunks, vectors={n: e.for_encoder("", WIDTH) for n, e in loaded.items()})
        plain = encode_chunks(parts.text_model, chunk_prompt(parts.tokenizer, prompt))
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert (got - plain).abs().max() > 1e-3  # the embedding matters
    embedding = loaded["zorbstyle"]
    assert (embedding.name, embedding.vectors, embedding.shape) == ("zorbstyle", count, WIDTH)
    if kind == "pt":
        assert (embedding.step, embedding.sd_checkpoint_name) == (500, "base")


def test_vectors_count_against_the_chunk_and_are_never_split(sd1):
    _, parts = sd1
    tokenizer = parts.tokenizer
    one = len(tokenizer.tokenize("a"))
    assert one == 1
    prompt = " ".join(["a"] * 73) + " zorb"
    chunks = chunk_prompt(tokenizer, prompt, embeddings={"zorb": 3}, comma_backtrack=0)
    assert len(chunks) == 2  # 73 + 3 > 75: the three vectors start the next chunk
    assert chunks[1].fixes == ((0, "zorb"),) and chunks[1].ids[1:4] == (0, 0, 0)
    chunks = chunk_prompt(tokenizer, " ".join(["a"] * 72) + " zorb", embeddings={"zorb": 3})
    assert len(chunks) == 1 and chunks[0].fixes == ((72, "zorb"),)


def test_bad_embeddings(tmp_path, monkeypatch):
    folder = tmp_path / "embeddings"
    write_embedding(folder, "wide", torch.randn(2, 1024), "safetensors")
    save_file({"clip_l": torch.randn(2, 768), "clip_g": torch.randn(2, 1280)}, str(folder / "xl.safetensors"))
    loaded, skipped = EmbeddingFolder(folder).for_model({"": WIDTH})
    assert not loaded and set(skipped) == {"wide", "xl"}
    xl = read_embedding(folder / "xl.safetensors")
    assert xl.shape == 2048 and xl.for_encoder("clip_g", 1280) is not None and xl.for_encoder("", 768) is None

    class Payload:
        def __reduce__(self):
            return (exec, ("import pathlib; pathlib.Path('PWNED').write_text('x')",))

    monkeypatch.chdir(tmp_path)
    torch.save({"string_to_param": {"*": torch.zeros(1, 4)}, "x": Payload()}, folder / "evil.pt")
    with pytest.raises(EmbeddingError, match="was refused"):
        read_embedding(folder / "evil.pt")
    assert not (tmp_path / "PWNED").exists()
    assert "refused" in EmbeddingFolder(folder).all()["evil"]


def test_sdxl_embedding_matches_diffusers_on_both_encoders(tmp_path):
    """An SDXL embedding ({clip_l, clip_g}) through the SDXL conditioner during a generation equals
    diffusers with each part loaded into its encoder (load_textual_inversion(..., text_encoder=,
    tokenizer=)): context and pooled."""
    import copy
    from types import SimpleNamespace

    from sdxl_fixtures import tiny_sdxl
    from test_sdxl_conditioning import ours_from

    from genpix.pipelines.extra_networks import ExtraNetworks, activated

    ref = tiny_sdxl(tmp_path, "base")
    ours = ours_from(ref, tmp_path).with_size(32, 32)
    g = torch.Generator().manual_seed(7)
    parts = {"clip_l": torch.randn(2, 64, generator=g), "clip_g": torch.randn(2, 128, generator=g)}
    (tmp_path / "embeddings").mkdir()
    save_file(parts, str(tmp_path / "embeddings" / "zorbxl.safetensors"))
    pipe = copy.deepcopy(ref)
    pipe.load_textual_inversion(parts["clip_l"], token="zorbxl", text_encoder=pipe.text_encoder,
                                tokenizer=pipe.tokenizer)
    pipe.load_textual_inversion(parts["clip_g"], token="zorbxl", text_encoder=pipe.text_encoder_2,
                                tokenizer=pipe.tokenizer_2)
    prompt = "a photo of zorbxl on the moon"
    with torch.no_grad():
        embeds, _, pooled, _ = pipe.encode_prompt(prompt, device="cpu", do_classifier_free_guidance=False)
    model = SimpleNamespace(networks=ExtraNetworks(tmp_path / "Lora", tmp_path / "embeddings"),
                            modules=(("text_encoder", ours.text_model), ("text_encoder_2", ours.text_model_2)))
    with activated(model, SimpleNamespace(prompt=prompt, negative_prompt="")):
        cond = ours.encode(prompt)
    plain = ours.encode(prompt)
    torch.testing.assert_close(cond["context"], embeds, atol=1e-5, rtol=1e-5)
    # bigG pools at argmax(ids) (eos_token_id 2, as SGM's tokens.argmax): diffusers' added tokens have ids
    # above eos, so its own pooled vector sits on an embedding token; sd-webui's placeholders are 0 and the
    # pool is at eos, as here: the reference is diffusers' last hidden state at eos, projected
    ids = pipe.tokenizer_2(pipe.maybe_convert_prompt(prompt, pipe.tokenizer_2), padding="max_length",
                           max_length=77, return_tensors="pt").input_ids
    eos = int((ids[0] == pipe.tokenizer_2.eos_token_id).nonzero()[0])
    with torch.no_grad():
        last = pipe.text_encoder_2(ids).last_hidden_state[:, eos]
        want = pipe.text_encoder_2.text_projection(last)
    torch.testing.assert_close(cond["text_embeds"], want, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(pooled, want)  # diffusers' own differs, for the reason above
    assert (cond["context"] - plain["context"]).abs().max() > 1e-3
