"""The models a server offers: the bundled ones plus those under --models-dir, by sd-webui title.

A request names a model by an alias (title, name, model_name, short hash or sha256), never by a
path, so no request reaches a file outside these folders. Pipelines are loaded with
genpix.load_pipeline on first use and kept (the last few) for the next requests.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genpix.errors import GenpixError
from genpix.pipelines import family_of
from genpix.pipelines.models import DEFAULT_TEXT_MODEL, bundled_models
from genpix.server.errors import ApiError
from genpix.server.paths import inside_folder

CHECKPOINT_SUFFIXES = (".safetensors", ".ckpt")  # single-file checkpoints (Stable Diffusion)
FOLDER_MARKERS = ("config.json", "model_index.json")  # genpix model folders, diffusers folders
MAX_DEPTH = 4  # how deep under --models-dir to look


@dataclass(frozen=True)
class ModelEntry:
    name: str  # relative path without extension, e.g. "fashion-vae" or "mine/digits"
    path: Path  # the model folder or checkpoint file
    sha256: str
    image_size: int | None  # the only size the model makes; None: any (a pipeline taking width/height)
    channels: int | None

    @property
    def short_hash(self) -> str:
        return self.sha256[:10]

    @property
    def title(self) -> str:
        return f"{self.name} [{self.short_hash}]"

    @property
    def model_name(self) -> str:
        return self.name.replace("/", "_").replace("\\", "_")

    def aliases(self) -> set[str]:
        return {a.casefold() for a in (self.title, self.name, self.model_name, self.short_hash, self.sha256)}

    def describe(self) -> dict[str, Any]:
        """sd-webui's /sd-models item."""
        filename = self.path / "model.safetensors" if self.path.is_dir() else self.path
        return {"title": self.title, "model_name": self.model_name, "hash": self.short_hash,
                "sha256": self.sha256, "filename": str(filename.resolve()), "config": None}


def _weight_files(path: Path) -> list[Path]:
    """What a model's hash covers: the file, a genpix folder's model.safetensors (not the preview decoder
    beside it), or a diffusers folder's weight files."""
    if path.is_file():
        return [path]
    if (path / "model.safetensors").is_file():
        return [path / "model.safetensors"]
    files = sorted(path.glob("*.safetensors")) or sorted(path.glob("**/*.safetensors"))
    return files or [p for p in (path / m for m in FOLDER_MARKERS) if p.is_file()]


def _model_size(path: Path) -> tuple[int | None, int | None]:
    """(image_size, channels) from a genpix model folder's config.json; (None, None) otherwise."""
    config_path = path / "config.json"
    if not path.is_dir() or not config_path.is_file():
        return None, None
    try:
        model = json.loads(config_path.read_text()).get("model", {})
    except (OSError, ValueError, AttributeError):
        return None, None
    if not isinstance(model, dict):
        return None, None
    size, channels = model.get("image_size"), model.get("channels")
    return (size if isinstance(size, int) else None, channels if isinstance(channels, int) else None)


class ModelCatalog:
    """The bundled models and the model folders/files under ``models_dir``, found by :meth:`refresh`."""

    def __init__(self, models_dir: str | Path | None = None, device: str = "cpu", keep_loaded: int = 2,
                 blocklist: str | Path | None = None, upscalers_dir: str | Path | None = None,
                 loading: dict[str, Any] | None = None) -> None:
        self.models_dir = Path(models_dir) if models_dir else None
        self.upscalers_dir = upscalers_dir  # the hires fix's upscaler files (pipelines/upscalers.py)
        self.device, self.keep_loaded = device, keep_loaded
        self.blocklist = blocklist  # extra prompt-blocklist terms for the text-to-image models
        # loading options for the families that take them (lora_dir, embeddings_dir: Stable Diffusion)
        self.loading = {k: str(v) for k, v in (loading or {}).items() if v is not None}
        self._entries: list[ModelEntry] | None = None
        self._hashes: dict[tuple[str, int, int], str] = {}  # (path, size, mtime) -> sha256
        self._loaded: OrderedDict[str, Any] = OrderedDict()  # sha256 + path -> pipeline

    @property
    def entries(self) -> list[ModelEntry]:
        if self._entries is None:
            self.refresh()
        return self._entries

    def refresh(self) -> list[ModelEntry]:
        found: list[tuple[str, Path]] = list(bundled_models().items())
        if self.models_dir is not None:
            if not self.models_dir.is_dir():
                raise GenpixError(f"--models-dir {self.models_dir} is not a folder")
            found += [(rel, path) for rel, path in self._scan(self.models_dir, self.models_dir, 0)]
        self._entries = [ModelEntry(name, path, self._sha256(path), *_model_size(path)) for name, path in found]
        return self._entries

    def _scan(self, root: Path, folder: Path, depth: int):
        for path in sorted(folder.iterdir()):
            if not inside_folder(root, path):  # a symlink out of the models folder is not offered
                continue
            rel = path.relative_to(root).as_posix()
            if path.is_dir() and any((path / m).is_file() for m in FOLDER_MARKERS):
                yield rel, path
            elif path.is_dir() and depth < MAX_DEPTH and not path.name.startswith("."):
                yield from self._scan(root, path, depth + 1)
            elif path.is_file() and path.suffix in CHECKPOINT_SUFFIXES:
                yield rel[: -len(path.suffix)], path

    def _sha256(self, path: Path) -> str:
        """sha256 of the weights file (of several: of their hashes); cached by path, size and mtime."""
        hashes = [self._file_sha256(file) for file in _weight_files(path)]
        return hashes[0] if len(hashes) == 1 else hashlib.sha256("".join(hashes).encode()).hexdigest()

    def _file_sha256(self, file: Path) -> str:
        stat = file.stat()
        key = (str(file.resolve()), stat.st_size, stat.st_mtime_ns)
        if key not in self._hashes:
            digest = hashlib.sha256()
            with open(file, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
            self._hashes[key] = digest.hexdigest()
        return self._hashes[key]

    def find(self, alias: str) -> ModelEntry:
        """The model with this title, name, model_name, short hash or sha256 (case-insensitive)."""
        folded = alias.strip().casefold()
        for entry in self.entries:
            if folded in entry.aliases():
                return entry
        titles = ", ".join(e.title for e in self.entries) or "none"
        raise ApiError(f"unknown model {alias!r}; available: {titles}", 404)

    def default(self, preferred: str | None = None) -> ModelEntry:
        """The ``preferred`` model, else the bundled text-to-image model, else the first one found."""
        if preferred:
            return self.find(preferred)
        if not self.entries:
            raise ApiError("no models: pass --models-dir with model folders, or install a bundled model", 404)
        return next((e for e in self.entries if e.name == DEFAULT_TEXT_MODEL), self.entries[0])

    def takes_vae(self, entry: ModelEntry) -> bool:
        """Whether the model's family loads an external VAE file (SD models; sd-webui's sd_vae)."""
        return "vae" in family_of(str(entry.path)).options

    def unload(self) -> None:
        """Drop every loaded pipeline (sd-webui's /unload-checkpoint); the next request loads again."""
        self._loaded.clear()

    def pipeline(self, entry: ModelEntry, vae: Path | None = None):
        """The loaded pipeline of ``entry`` (loading it with genpix.load_pipeline if needed), with the VAE
        file ``vae`` in place of its own (a model that takes one, see :meth:`takes_vae`)."""
        import genpix

        key = f"{entry.sha256}:{entry.path}:{vae or ''}"
        if key not in self._loaded:
            options = family_of(str(entry.path)).options
            given = {**self.loading, **({} if self.blocklist is None else {"blocklist": self.blocklist})}
            extra = {k: v for k, v in given.items() if k in options}
            if vae is not None:
                extra["vae"] = str(vae)
            self._loaded[key] = genpix.load_pipeline(str(entry.path), device=self.device, **extra)
            if self.upscalers_dir is not None and hasattr(self._loaded[key], "upscalers_dir"):
                self._loaded[key].upscalers_dir = str(self.upscalers_dir)
            while len(self._loaded) > self.keep_loaded:
                self._loaded.popitem(last=False)
        self._loaded.move_to_end(key)
        return self._loaded[key]
