"""Textual-inversion embeddings (Gal et al. 2022, "An Image is Worth One Word") as sd-webui reads them.

sd-webui (modules/textual_inversion/textual_inversion.py ``load_from_file``):

- ``.pt`` / ``.bin``: ``{"string_to_param": {"*": [n, D]}, "string_to_token", "name", "step",
  "sd_checkpoint", "sd_checkpoint_name"}``, or diffusers' ``{"<token>": [D] or [n, D]}``; read with
  ``torch.load(weights_only=True)`` only (a pickle that would run code is refused, nothing runs);
- ``.safetensors``: one tensor (``emb_params`` [n, D] in sd-webui's own files), or SDXL's
  ``{"clip_l": [n, 768], "clip_g": [n, 1280]}``, one part per text encoder.

The word in the prompt is the file stem, not the name stored inside. An embedding applies to a
text encoder whose token width is its D; :class:`EmbeddingFolder` sorts a folder's files into
those that fit a model (``loaded``) and those that do not (``skipped``), as sd-webui's
``/sdapi/v1/embeddings`` lists them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import torch

from genpix.errors import GenpixError
from genpix.io.sd_checkpoint import read_state_dict

EMBEDDING_SUFFIXES = (".pt", ".bin", ".safetensors")
DEFAULT_EMBEDDINGS_DIR = "embeddings"
ANY = ""  # the part key of a single-tensor embedding: it fits any text encoder of its width


class EmbeddingError(GenpixError, ValueError):
    """An embedding file that cannot be read, or that does not fit the model's text encoder."""


@dataclass(frozen=True)
class Embedding:
    """One embedding: its vectors per text encoder ("" for any, or "clip_l" / "clip_g")."""

    name: str  # the file stem: the word in prompts
    parts: dict[str, torch.Tensor]  # part -> (n, D) float32
    path: Path | None = None
    step: int | None = None
    sd_checkpoint: str | None = None
    sd_checkpoint_name: str | None = None
    info: dict = field(default_factory=dict)

    @property
    def vectors(self) -> int:
        return next(iter(self.parts.values())).shape[0]

    @property
    def shape(self) -> int:
        """sd-webui's ``shape``: the width, summed over the parts of an SDXL embedding."""
        return sum(t.shape[1] for t in self.parts.values())

    def for_encoder(self, part: str, width: int) -> torch.Tensor | None:
        """The (n, D) vectors for a text encoder named ``part`` of token width ``width``, or None."""
        tensor = self.parts.get(part, self.parts.get(ANY))
        return tensor if tensor is not None and tensor.shape[1] == width else None


def _as_matrix(tensor: torch.Tensor, path: Path) -> torch.Tensor:
    if not torch.is_tensor(tensor) or tensor.ndim not in (1, 2) or not tensor.is_floating_point():
        raise EmbeddingError(f"{path}: not an embedding (expected float vectors (n, D))")
    return tensor.detach().float().reshape(-1, tensor.shape[-1])


def read_embedding(path: str | Path) -> Embedding:
    """The embedding in a .pt / .bin / .safetensors file (see the module docstring)."""
    path = Path(path)
    if path.suffix not in EMBEDDING_SUFFIXES:
        raise EmbeddingError(f"{path}: not an embedding file (use {', '.join(EMBEDDING_SUFFIXES)})")
    if path.suffix == ".safetensors":
        data: dict = read_state_dict(path)
    else:
        data = _read_pickle(path)
    extra = {}
    if isinstance(data.get("string_to_param"), dict):  # sd-webui's own .pt
        params = data["string_to_param"]
        if len(params) != 1:
            raise EmbeddingError(f"{path}: string_to_param holds {len(params)} tensors, expected 1")
        parts = {ANY: _as_matrix(next(iter(params.values())), path)}
        extra = {k: data.get(k) for k in ("step", "sd_checkpoint", "sd_checkpoint_name")}
    elif {"clip_l", "clip_g"} & set(data):
        parts = {k: _as_matrix(data[k], path) for k in ("clip_l", "clip_g") if k in data}
    else:
        tensors = {k: v for k, v in data.items() if torch.is_tensor(v)}
        if len(tensors) != 1:
            raise EmbeddingError(f"{path}: {len(tensors)} tensors; an embedding file holds one "
                                 f"(emb_params, string_to_param or a diffusers token)")
        parts = {ANY: _as_matrix(next(iter(tensors.values())), path)}
    if len({t.shape[0] for t in parts.values()}) != 1:
        raise EmbeddingError(f"{path}: its clip_l and clip_g parts hold different numbers of vectors")
    step = extra.get("step")
    return Embedding(path.stem, parts, path, step=int(step) if isinstance(step, (int, float)) else None,
                     sd_checkpoint=_text(extra.get("sd_checkpoint")),
                     sd_checkpoint_name=_text(extra.get("sd_checkpoint_name")))


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _read_pickle(path: Path) -> dict:
    """torch.load(weights_only=True): plain containers and tensors, never code."""
    import pickle

    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise EmbeddingError(f"{path} was refused: it is not a plain weights file "
                             f"({str(error).splitlines()[0]})") from None
    except (RuntimeError, EOFError, OSError) as error:
        raise EmbeddingError(f"{path} is not a readable embedding ({error})") from None
    if not isinstance(data, dict):
        raise EmbeddingError(f"{path} does not hold an embedding dictionary")
    return data


def file_hash(path: Path) -> str:
    """sd-webui's TI hash: the first 12 hex digits of the file's sha256."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:12]


class EmbeddingFolder:
    """The embeddings of a folder (sub-folders included), re-read when a file changes."""

    def __init__(self, folder: str | Path | None = None) -> None:
        self.folder = Path(folder if folder is not None else DEFAULT_EMBEDDINGS_DIR)
        self._cache: dict[tuple, Embedding | str] = {}

    def all(self) -> dict[str, Embedding | str]:
        """Stem -> Embedding, or the one-line reason it cannot be read."""
        found: dict[str, Embedding | str] = {}
        if not self.folder.is_dir():
            return found
        cache: dict[tuple, Embedding | str] = {}
        for path in sorted(self.folder.rglob("*")):
            if path.suffix not in EMBEDDING_SUFFIXES or not path.is_file() or path.stem in found:
                continue
            stat = path.stat()
            key = (str(path), stat.st_size, stat.st_mtime_ns)
            if key not in self._cache:
                try:
                    self._cache[key] = read_embedding(path)
                except GenpixError as error:
                    self._cache[key] = str(error)
            cache[key] = found[path.stem] = self._cache[key]
        self._cache = cache
        return found

    def for_model(self, widths: dict[str, int]) -> tuple[dict[str, Embedding], dict[str, Embedding | str]]:
        """(loaded, skipped): embeddings with vectors for every text encoder (part -> width), and
        the rest (a wrong width, or unreadable)."""
        loaded, skipped = {}, {}
        for name, embedding in self.all().items():
            fits = isinstance(embedding, Embedding) and all(
                embedding.for_encoder(part, width) is not None for part, width in widths.items())
            (loaded if fits else skipped)[name] = embedding
        return loaded, skipped
