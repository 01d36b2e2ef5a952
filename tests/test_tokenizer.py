"""CLIP's byte-level BPE tokenizer against transformers' CLIPTokenizer, on a vocabulary trained here."""

from __future__ import annotations

import collections
import gzip
import hashlib
import json
from pathlib import Path

import pytest
import torch

from genpix.models.tokenizer import (
    CLIPTokenizer,
    ByteTokenizer,
    TokenizerError,
    bytes_to_unicode,
    fetch_clip_bpe,
    load_clip_tokenizer,
)

CORPUS = """a photo of an astronaut riding a horse on the moon. a painting of a red circle above a blue
square, highly detailed; the photograph of a sneaker, the sneaker photo! it's a cat, they're dogs,
we'll see. 1234 numbers and 3.14 digits. café naïve résumé. 東京の夜景 🐱🚀 don't stop (brackets) [x]"""

PROMPTS = [
    "a photo of an astronaut riding a horse",
    "A  PHOTO\tof\n\nthe   Moon!!",
    "",
    "   ",
    "café naïve résumé Ünïcödé ß ǅ",
    "cafe\u0301 (combining accent, NFC)",
    "東京の夜景",
    "emoji 🐱🚀 and ❤️ zwj 👩‍🚀",
    "it's we're they'll I'd don't 'S 'LL",
    "1234 numbers 3.14 ² ½ Ⅻ",
    "punctuation... ?!,;:-- (brackets) [x] {y} <tag> a_b a-b",
    "tab\tand\u00a0nbsp and\u2003em space",
    "ﬁ ligature and ＦＵＬＬ width",
    "the photograph photographic photo photos",
    "a <|endoftext|> inside and <|startoftext|>",
    "sneaker " * 100,  # 100 words: truncated to 75 tokens
    " ".join(f"word{i}" for i in range(60)),  # digits split one by one: well past 77
]


def train_bpe(corpus: str, n_merges: int) -> tuple[list[str], list[tuple[str, str]]]:
    """CLIP-style vocabulary: 256 byte symbols, the same with </w>, merges counted on `corpus`, specials.

    Written from Sennrich et al. (2016), independently of genpix's encoder: whitespace words only.
    """
    b2u = bytes_to_unicode()
    counts = collections.Counter(corpus.lower().split())
    words = {}
    for word, count in counts.items():
        chars = [b2u[b] for b in word.encode("utf-8")]
        words[tuple(chars[:-1]) + (chars[-1] + "</w>",)] = count
    merges: list[tuple[str, str]] = []
    for _ in range(n_merges):
        pairs = collections.Counter()
        for word, count in words.items():
            for pair in zip(word, word[1:]):
                pairs[pair] += count
        if not pairs:
            break
        best = max(pairs, key=lambda p: (pairs[p], p))
        merges.append(best)
        merged = {}
        for word, count in words.items():
            out, i = [], 0
            while i < len(word):
                if i + 1 < len(word) and (word[i], word[i + 1]) == best:
                    out.append(word[i] + word[i + 1])
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            merged[tuple(out)] = count
        words = merged
    symbols = list(b2u.values())
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
    return tokens + ["<|startoftext|>", "<|endoftext|>"], merges


def write_folder(folder: Path, tokens: list[str], merges: list[tuple[str, str]], pad: str | None = None) -> Path:
    """A diffusers-style tokenizer/ folder; `pad` writes the SD 2.x special_tokens_map.json."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges),
                                       encoding="utf-8")
    if pad is not None:
        specials = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
                    "unk_token": "<|endoftext|>", "pad_token": pad}
        (folder / "special_tokens_map.json").write_text(json.dumps(specials), encoding="utf-8")
        (folder / "tokenizer_config.json").write_text(json.dumps({**specials, "model_max_length": 77}),
                                                      encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def vocab() -> tuple[list[str], list[tuple[str, str]]]:
    return train_bpe(CORPUS, 150)


def hf_ids(folder: Path, prompts: list[str]) -> torch.Tensor:
    from transformers import CLIPTokenizer as HFCLIPTokenizer

    hf = HFCLIPTokenizer.from_pretrained(str(folder))
    return hf(prompts, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids


@pytest.mark.parametrize("pad", [None, "!"], ids=["sd1-eos-pad", "sd2-bang-pad"])
def test_ids_match_transformers(tmp_path, vocab, pad):
    folder = write_folder(tmp_path / "tokenizer", *vocab, pad=pad)
    ours = CLIPTokenizer.from_folder(folder)
    with pytest.warns(UserWarning, match="over the limit of 75"):
        ids = ours(PROMPTS)
    expected = hf_ids(folder, PROMPTS)
    assert ids.shape == (len(PROMPTS), 77) and ids.dtype == torch.int64
    for prompt, row, want in zip(PROMPTS, ids, expected):
        assert row.tolist() == want.tolist(), prompt
    assert ours.pad_id == (0 if pad == "!" else ours.eos_id)
    assert ids[2].tolist() == [ours.bos_id, ours.eos_id] + [ours.pad_id] * 75  # the empty prompt
    assert (ids[-1, -1] == ours.eos_id) and (ids[-2, -1] == ours.eos_id)  # truncated rows end in eos


def test_random_prompts_match_transformers(tmp_path, vocab):
    """300 random prompts over letters, digits, punctuation, accents, CJK, emoji and odd whitespace."""
    import random

    rng = random.Random(0)
    alphabet = list("aaaeeeiooutnsrhl photo moon the PHOTO ") + list("0123456789.,;:!?'\"()[]{}<>-_/\\|@#$%^&*~`+=") \
        + list("éèüßçñÅØœ東京夜景の🐱🚀❤️👩‍\u0301\u00a0\u2003\t\n\r") + ["'s", "'ll", "'RE", "<|endoftext|>"]
    prompts = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 90))) for _ in range(300)]
    for pad in (None, "!"):
        folder = write_folder(tmp_path / f"tok{pad}", *vocab, pad=pad)
        ours = CLIPTokenizer.from_folder(folder)(prompts, warn=False)
        assert ours.tolist() == hf_ids(folder, prompts).tolist()


def test_merges_are_used_and_decode_round_trips(tmp_path, vocab):
    ours = CLIPTokenizer.from_folder(write_folder(tmp_path / "tok", *vocab))
    assert len(ours.tokenize("photograph")) < len("photograph")  # merged, not byte by byte
    assert ours.tokenize("photograph")[-1].endswith("</w>")
    assert ours.decode(ours("A Photo of  a CAFÉ 🐱")[0]) == "a photo of a café 🐱"
    assert ours(b"bad \xff utf-8").shape == (1, 77)  # invalid UTF-8 becomes U+FFFD, no crash
    assert ours("a\udcff b").shape == (1, 77)  # a lone surrogate too


def test_missing_files_name_the_files_and_where_to_put_them(tmp_path, vocab, monkeypatch):
    (tmp_path / "vocab.json").write_text("{}")
    with pytest.raises(TokenizerError, match=r"missing in .*: merges\.txt; copy vocab\.json and merges\.txt"):
        CLIPTokenizer.from_folder(tmp_path)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(TokenizerError, match="no CLIP tokenizer found: pass a folder holding vocab.json"):
        load_clip_tokenizer(cache_dir=tmp_path / "empty")
    # the standard Hugging Face cache layout is found without a download
    snapshot = tmp_path / "hub" / "models--openai--clip-vit-large-patch14" / "snapshots" / "abc123"
    write_folder(snapshot, *vocab)
    found = load_clip_tokenizer(cache_dir=tmp_path / "empty", pad_token="!")
    assert found.encoder == CLIPTokenizer.from_folder(snapshot).encoder and found.pad_id == 0


def test_download_checksummed_bpe_file_and_offline_message(tmp_path, vocab, monkeypatch):
    """OpenAI's merges-file layout served from file://; ids equal the vocab.json + merges.txt route."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "no-hub"))
    tokens, merges = vocab
    gz = tmp_path / "server" / "bpe_simple_vocab_16e6.txt.gz"
    gz.parent.mkdir()
    gz.write_bytes(gzip.compress(("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges)).encode()))
    sha = hashlib.sha256(gz.read_bytes()).hexdigest()
    cache = tmp_path / "cache"

    with pytest.raises(TokenizerError, match="checksum mismatch"):
        fetch_clip_bpe(url=gz.as_uri(), sha256="0" * 64, cache_dir=cache)
    with pytest.raises(TokenizerError, match=r"offline, download bpe_simple_vocab_16e6\.txt\.gz .* put it in"):
        fetch_clip_bpe(url=(tmp_path / "nowhere.gz").as_uri(), sha256=sha, cache_dir=cache)
    path = fetch_clip_bpe(url=gz.as_uri(), sha256=sha, cache_dir=cache)
    assert path == cache / "bpe_simple_vocab_16e6.txt.gz" and path.read_bytes() == gz.read_bytes()

    from_file = load_clip_tokenizer(cache_dir=cache)  # found in the cache now, no download
    from_folder = CLIPTokenizer.from_folder(write_folder(tmp_path / "tok", tokens, merges))
    assert from_file.encoder == from_folder.encoder
    for prompt in PROMPTS[:-2]:
        assert from_file(prompt).tolist() == from_folder(prompt).tolist()
    sd2 = load_clip_tokenizer(cache_dir=cache, pad_token="!")
    assert sd2("a photo")[0, -1].item() == sd2.encoder["!"] == sd2.pad_id == 0


def test_byte_tokenizer_needs_no_files():
    tok = ByteTokenizer(max_length=8)
    assert tok(["Hi", ""]).tolist() == [[256, 104, 105, 257, 258, 258, 258, 258], [256, 257] + [258] * 6]
    with pytest.warns(UserWarning, match="over the limit of 6"):
        assert tok("abcdefghij")[0].tolist() == [256, *b"abcdef", 257]
