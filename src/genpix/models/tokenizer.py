"""Tokenizers that turn prompts into fixed-length id sequences for the text encoders.

:class:`CLIPTokenizer` is CLIP's byte-level byte-pair encoding (Radford et al. 2021, "Learning
Transferable Visual Models From Natural Language Supervision"; BPE from Sennrich et al. 2016,
"Neural Machine Translation of Rare Words with Subword Units"; the byte-level alphabet from GPT-2,
Radford et al. 2019). It gives the ids transformers' ``CLIPTokenizer`` gives, which Stable Diffusion
1.x and 2.x were trained with: NFC, whitespace runs to one space, lower case, the regex split into
words, numbers one digit at a time and punctuation runs, each word's UTF-8 bytes mapped to printable
characters, merged by rank, ``</w>`` marking a word's end; then ``<|startoftext|>`` ... ``<|endoftext|>``
padded to 77. SD 1.x pads with ``<|endoftext|>`` (id 49407), SD 2.x (OpenCLIP) with ``!`` (id 0).

:class:`ByteTokenizer` needs no vocabulary file: UTF-8 bytes plus three special ids, for the small
text encoder genpix trains itself.
"""

from __future__ import annotations

import functools
import gzip
import json
import os
import unicodedata
import warnings
from pathlib import Path

import regex
import torch

from genpix.errors import GenpixError

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
CLIP_MAX_LENGTH = 77  # 75 prompt tokens between <|startoftext|> and <|endoftext|>
VOCAB_FILES = ("vocab.json", "merges.txt")  # diffusers' tokenizer/ folder (transformers' file names)

# OpenAI's merges list; the vocabulary of the SD 1.x/2.x tokenizers is rebuilt from it exactly.
CLIP_BPE_URL = "https://github.com/openai/CLIP/raw/main/clip/bpe_simple_vocab_16e6.txt.gz"
CLIP_BPE_FILE = "bpe_simple_vocab_16e6.txt.gz"
CLIP_BPE_SHA256 = "924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a"
_CLIP_BPE_MERGES = 49152 - 256 - 2  # merges CLIP uses from that file: vocab 49408 = 512 + merges + 2

# Special tokens, contractions, letter runs, single digits, runs of other non-space characters.
_PATTERN = regex.compile(
    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
)
_WHITESPACE = regex.compile(r"\s+")


class TokenizerError(GenpixError, ValueError):
    """Tokenizer files are missing, unreadable or inconsistent."""


@functools.lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """The GPT-2/CLIP map from each of the 256 byte values to a printable unicode character.

    Printable Latin-1 bytes map to themselves; the rest (controls, space, ...) to code points from
    256 upwards, so every byte string becomes a visible string BPE can merge.
    """
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    mapping = {byte: chr(byte) for byte in keep}  # this order is the vocabulary's: "!" is id 0
    for byte in range(256):
        if byte not in mapping:
            mapping[byte] = chr(256 + len(mapping) - len(keep))
    return mapping


def normalize(text: str) -> str:
    """transformers' CLIP normalisation: NFC, whitespace runs to one space, stripped, lower case."""
    return _WHITESPACE.sub(" ", unicodedata.normalize("NFC", text)).strip().lower()


class CLIPTokenizer:
    """Byte-level BPE with CLIP's specials; ``tokenizer(prompts)`` -> ids (B, max_length) int64."""

    def __init__(self, vocab: dict[str, int], merges: list[tuple[str, str]], *,
                 pad_token: str = EOS, max_length: int = CLIP_MAX_LENGTH) -> None:
        for token in (BOS, EOS, pad_token):
            if token not in vocab:
                raise TokenizerError(f"the vocabulary has no {token!r} token")
        if max_length < 2:
            raise TokenizerError(f"max_length must be at least 2 (bos and eos), got {max_length}")
        self.encoder = dict(vocab)
        self.decoder = {i: t for t, i in vocab.items()}
        self.ranks = {pair: rank for rank, pair in enumerate(merges)}  # lower rank merges first
        self.bos_id, self.eos_id, self.pad_id = vocab[BOS], vocab[EOS], vocab[pad_token]
        self.unk_id = self.eos_id  # as transformers: unk_token is <|endoftext|>
        self.max_length = max_length
        self._byte_encoder = bytes_to_unicode()
        self._byte_decoder = {c: b for b, c in self._byte_encoder.items()}
        self._cache: dict[str, tuple[str, ...]] = {BOS: (BOS,), EOS: (EOS,)}
        # transformers matches special tokens in the raw text before anything else: with SD 2.x's
        # pad token "!", every "!" in a prompt becomes id 0 rather than a BPE symbol.
        self._special_tokens = {BOS, EOS, pad_token}
        alternatives = "|".join(regex.escape(t) for t in sorted(self._special_tokens, key=len, reverse=True))
        self._specials = regex.compile(f"({alternatives})")

    @property
    def vocab_size(self) -> int:
        return len(self.encoder)

    # -- loading ----------------------------------------------------------------------------------

    @classmethod
    def from_folder(cls, folder: str | Path, *, max_length: int | None = None) -> CLIPTokenizer:
        """Read ``vocab.json`` and ``merges.txt`` (a diffusers ``tokenizer/`` folder).

        The pad token and length come from ``special_tokens_map.json`` / ``tokenizer_config.json``
        when present (``"!"`` in SD 2.x folders), else ``<|endoftext|>`` and 77.
        """
        folder = Path(folder)
        missing = [name for name in VOCAB_FILES if not (folder / name).is_file()]
        if missing:
            raise TokenizerError(missing_files_message(folder, missing))
        try:
            vocab = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
            lines = (folder / "merges.txt").read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise TokenizerError(f"cannot read the tokenizer in {folder}: {exc}") from exc
        if not isinstance(vocab, dict):
            raise TokenizerError(f"{folder / 'vocab.json'} is not a JSON object of token: id")
        merges = _parse_merges(lines[1:] if lines and lines[0].startswith("#version") else lines, folder)
        settings = _read_settings(folder)
        pad = settings.get("pad_token", EOS)
        length = settings.get("model_max_length", CLIP_MAX_LENGTH)
        length = max_length or (length if length <= 4096 else CLIP_MAX_LENGTH)  # huge: transformers' "unset"
        return cls(vocab, merges, pad_token=pad, max_length=length)

    @classmethod
    def from_bpe_file(cls, path: str | Path, *, pad_token: str = EOS,
                      max_length: int = CLIP_MAX_LENGTH) -> CLIPTokenizer:
        """Build the tokenizer from OpenAI's ``bpe_simple_vocab_16e6.txt.gz`` (or a file like it).

        The vocabulary is the 256 byte characters, the same with ``</w>``, one token per merge, then
        the two specials: exactly the 49,408 ids of ``openai/clip-vit-large-patch14``'s vocab.json.
        """
        path = Path(path)
        try:
            opener = gzip.open if path.suffix == ".gz" else open
            with opener(path, "rt", encoding="utf-8") as f:
                lines = f.read().split("\n")
        except (OSError, UnicodeDecodeError, EOFError) as exc:
            raise TokenizerError(f"cannot read the BPE merges file {path}: {exc}") from exc
        merges = _parse_merges([ln for ln in lines[1 : _CLIP_BPE_MERGES + 1] if ln.strip()], path)
        symbols = list(bytes_to_unicode().values())
        tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges] + [BOS, EOS]
        return cls({t: i for i, t in enumerate(tokens)}, merges, pad_token=pad_token, max_length=max_length)

    # -- encoding ---------------------------------------------------------------------------------

    def bpe(self, word: str) -> tuple[str, ...]:
        """Merge one pre-token (already byte-mapped) into BPE symbols, lowest-rank pair first."""
        if word in self._cache:
            return self._cache[word]
        symbols = [*word[:-1], word[-1] + "</w>"]
        while len(symbols) > 1:
            pairs = set(zip(symbols, symbols[1:]))
            best = min(pairs, key=lambda pair: self.ranks.get(pair, float("inf")))
            if best not in self.ranks:
                break
            merged, i = [], 0
            while i < len(symbols):  # merge every occurrence, left to right, without overlap
                if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == best:
                    merged.append(symbols[i] + symbols[i + 1])
                    i += 2
                else:
                    merged.append(symbols[i])
                    i += 1
            symbols = merged
        result = tuple(symbols)
        if len(self._cache) < 100_000:
            self._cache[word] = result
        return result

    def tokenize(self, text: str | bytes) -> list[str]:
        """The BPE symbols of `text`, without bos/eos (invalid UTF-8 becomes U+FFFD)."""
        if isinstance(text, bytes):
            text = text.decode("utf-8", errors="replace")
        text = text.encode("utf-8", errors="replace").decode("utf-8")  # lone surrogates -> "?"
        symbols: list[str] = []
        for piece in self._specials.split(text):  # specials first, on the raw text, as transformers
            if piece in self._special_tokens:
                symbols.append(piece)
                continue
            for word in _PATTERN.findall(normalize(piece)):
                if word in (BOS, EOS):
                    symbols.append(word)
                else:
                    symbols.extend(self.bpe("".join(self._byte_encoder[b] for b in word.encode("utf-8"))))
        return symbols

    def encode(self, text: str | bytes) -> list[int]:
        """``[bos, ids..., eos]`` for one prompt, neither truncated nor padded."""
        return [self.bos_id, *(self.encoder.get(s, self.unk_id) for s in self.tokenize(text)), self.eos_id]

    def __call__(self, prompts: str | bytes | list[str], *, max_length: int | None = None,
                 warn: bool = True) -> torch.Tensor:
        """Ids (B, max_length) int64: bos, tokens truncated to max_length - 2, eos, then pad.

        A prompt that does not fit is truncated with a warning naming how many tokens were dropped.
        """
        return batch_ids(self, prompts, max_length or self.max_length, warn=warn)

    def decode(self, ids: list[int] | torch.Tensor) -> str:
        """Text of `ids`, specials and padding dropped (lower case, normalised whitespace)."""
        ids = ids.tolist() if isinstance(ids, torch.Tensor) else ids
        words, current = [], bytearray()
        for i in ids:
            token = self.decoder.get(int(i), "")
            if int(i) in (self.bos_id, self.eos_id, self.pad_id):
                continue
            current.extend(self._byte_decoder[c] for c in token.removesuffix("</w>") if c in self._byte_decoder)
            if token.endswith("</w>"):
                words.append(current.decode("utf-8", errors="replace"))
                current = bytearray()
        return " ".join([*words, current.decode("utf-8", errors="replace")] if current else words)


def batch_ids(tokenizer: CLIPTokenizer | ByteTokenizer, prompts: str | bytes | list[str], length: int, *,
              warn: bool = True) -> torch.Tensor:
    """(B, length) int64 rows ``[bos, ..., eos, pad, ...]``; a long prompt keeps its first length - 2."""
    if isinstance(prompts, (str, bytes)):
        prompts = [prompts]
    if length < 2:
        raise TokenizerError(f"max_length must be at least 2 (bos and eos), got {length}")
    rows = []
    for prompt in prompts:
        ids = tokenizer.encode(prompt)
        if len(ids) > length:
            if warn:
                warnings.warn(f"prompt is {len(ids) - 2} tokens, over the limit of {length - 2}: "
                              f"the last {len(ids) - length} were dropped", stacklevel=3)
            ids = [*ids[: length - 1], tokenizer.eos_id]
        rows.append(ids + [tokenizer.pad_id] * (length - len(ids)))
    return torch.tensor(rows, dtype=torch.int64).reshape(len(rows), length)


def _parse_merges(lines: list[str], source: Path) -> list[tuple[str, str]]:
    merges = []
    for number, line in enumerate(lines, 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2:
            raise TokenizerError(f"{source}: merge {number} is not two symbols: {line!r}")
        merges.append((parts[0], parts[1]))
    return merges


def _read_settings(folder: Path) -> dict:
    """pad_token and model_max_length from transformers' side files, when they are there."""
    settings: dict = {}
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        path = folder / name
        if not path.is_file():
            continue
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise TokenizerError(f"cannot read {path}: {exc}") from exc
        pad = data.get("pad_token")
        if isinstance(pad, dict):
            pad = pad.get("content")
        if isinstance(pad, str):
            settings["pad_token"] = pad
        if isinstance(data.get("model_max_length"), int):
            settings["model_max_length"] = data["model_max_length"]
    return settings


def missing_files_message(folder: Path, missing: list[str]) -> str:
    """One line: which tokenizer files are missing, and where to put them."""
    return (f"tokenizer files missing in {folder}: {', '.join(missing)}; copy vocab.json and merges.txt "
            f"from a Stable Diffusion model's tokenizer/ folder (or openai/clip-vit-large-patch14) into "
            f"{folder}, or put {CLIP_BPE_FILE} in {clip_cache_dir()}")


# -- finding or fetching the real CLIP vocabulary ---------------------------------------------------


def clip_cache_dir() -> Path:
    """Where the downloaded CLIP merges file is kept: ``$XDG_CACHE_HOME/genpix/clip``."""
    from genpix.data.download import default_cache_dir

    return default_cache_dir() / "clip"


def _hf_hub_folders() -> list[Path]:
    """CLIP tokenizer folders in the Hugging Face cache (``models--openai--clip-vit-large-patch14``)."""
    hf_home = Path(os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface")
    root = Path(os.environ.get("HF_HUB_CACHE") or hf_home / "hub")
    found = []
    for repo in ("models--openai--clip-vit-large-patch14",
                 "models--stable-diffusion-v1-5--stable-diffusion-v1-5"):
        for snapshot in sorted((root / repo / "snapshots").glob("*")):
            for folder in (snapshot, snapshot / "tokenizer"):
                if all((folder / name).is_file() for name in VOCAB_FILES):
                    found.append(folder)
    return found


def fetch_clip_bpe(*, url: str = CLIP_BPE_URL, sha256: str = CLIP_BPE_SHA256,
                   cache_dir: str | Path | None = None) -> Path:
    """The path of CLIP's merges file in the cache, downloading it (checksummed) when absent.

    Raises TokenizerError offline, naming the file, its checksum and the folder to put it in.
    """
    from genpix.data.dataset import DataError
    from genpix.data.download import download

    folder = Path(cache_dir) if cache_dir is not None else clip_cache_dir()
    dest = folder / CLIP_BPE_FILE
    if dest.is_file():
        return dest
    try:
        return download(url, dest, sha256, algorithm="sha256")
    except DataError as exc:
        raise TokenizerError(f"{exc}; offline, download {CLIP_BPE_FILE} (sha256 {sha256}) from {url} "
                             f"elsewhere and put it in {folder}, or pass a tokenizer folder holding "
                             f"vocab.json and merges.txt") from exc


def load_clip_tokenizer(folder: str | Path | None = None, *, download: bool = False,
                        pad_token: str = EOS, cache_dir: str | Path | None = None) -> CLIPTokenizer:
    """The CLIP tokenizer from `folder`, else the local caches, else (with `download`) the web.

    Looks in order: `folder` (vocab.json + merges.txt); the genpix cache's merges file; the Hugging
    Face cache. `pad_token` applies to the merges-file and cache routes ("!" for SD 2.x).
    """
    if folder is not None:
        return CLIPTokenizer.from_folder(folder)
    cached = (Path(cache_dir) if cache_dir is not None else clip_cache_dir()) / CLIP_BPE_FILE
    if cached.is_file():
        return CLIPTokenizer.from_bpe_file(cached, pad_token=pad_token)
    for hub_folder in _hf_hub_folders():
        tok = CLIPTokenizer.from_folder(hub_folder)
        return CLIPTokenizer(tok.encoder, list(tok.ranks), pad_token=pad_token, max_length=tok.max_length)
    if download:
        return CLIPTokenizer.from_bpe_file(fetch_clip_bpe(cache_dir=cache_dir), pad_token=pad_token)
    raise TokenizerError(f"no CLIP tokenizer found: pass a folder holding vocab.json and merges.txt, or put "
                         f"{CLIP_BPE_FILE} (from {CLIP_BPE_URL}) in {cached.parent}, or allow the download")


class ByteTokenizer:
    """UTF-8 bytes as ids 0-255, then bos 256, eos 257, pad 258: no vocabulary file at all.

    For the small text encoder genpix trains with its U-Net; (B, max_length) like CLIP's.
    """

    vocab_size = 259
    bos_id, eos_id, pad_id = 256, 257, 258

    def __init__(self, max_length: int = CLIP_MAX_LENGTH) -> None:
        if max_length < 2:
            raise TokenizerError(f"max_length must be at least 2 (bos and eos), got {max_length}")
        self.max_length = max_length

    def encode(self, text: str | bytes) -> list[int]:
        if isinstance(text, str):
            text = text.encode("utf-8", errors="replace")
        text = text.decode("utf-8", errors="replace")
        return [self.bos_id, *normalize(text).encode("utf-8"), self.eos_id]

    def __call__(self, prompts: str | bytes | list[str], *, max_length: int | None = None,
                 warn: bool = True) -> torch.Tensor:
        """Ids (B, max_length) int64, truncated (with a warning) and padded like CLIPTokenizer."""
        return batch_ids(self, prompts, max_length or self.max_length, warn=warn)
