"""The named upscalers: the plain ones, then every upscaler file in a folder, by file stem.

sd-webui lists ``None``, ``Lanczos``, ``Nearest`` first, then the files it finds (recursively) in
``models/ESRGAN`` under their file names without the suffix; genpix does the same with
``--upscalers-dir`` (default ``models/ESRGAN``). A file is read once to learn its architecture and
scale (kept while its size and time stamp stay the same); one that cannot be read is skipped with a
one-line warning. The last network used stays loaded.
"""

from __future__ import annotations

import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from genpix.io.upscaler_file import (SUFFIXES, UpscalerFileError, UpscalerSpec, inspect_state, load_upscaler,
                                     read_state_dict)
from genpix.pipelines.tiling import TileConfig
from genpix.pipelines.upscale import MAX_OUTPUT_PIXELS, PLAIN_UPSCALERS, UpscaleError, Upscaler

DEFAULT_DIR = "models/ESRGAN"


@dataclass(frozen=True)
class UpscalerEntry:
    """One name the registry knows; ``path`` and ``spec`` are None for the plain upscalers."""

    name: str
    path: Path | None = None
    spec: UpscalerSpec | None = None

    @property
    def scale(self) -> int:
        return self.spec.scale if self.spec is not None else 4

    def describe(self) -> dict:
        """sd-webui's /sdapi/v1/upscalers item."""
        return {"name": self.name, "model_name": self.spec.architecture if self.spec else None,
                "model_path": str(self.path) if self.path else None, "model_url": None, "scale": self.scale}


class UpscalerRegistry:
    """Upscalers by name from ``folder`` (may be missing: then only the plain ones)."""

    def __init__(self, folder: str | Path | None = DEFAULT_DIR, *, tile: TileConfig | None = None,
                 device: torch.device | str = "cpu", limit: int = MAX_OUTPUT_PIXELS) -> None:
        self.folder = Path(folder) if folder is not None else None
        self.tile = tile or TileConfig()
        self.device = torch.device(device)
        self.limit = limit
        self._specs: dict[Path, tuple[tuple[int, int], UpscalerSpec]] = {}
        self._loaded: tuple[str, Upscaler] | None = None
        self._lock = threading.Lock()

    def files(self) -> list[Path]:
        if self.folder is None or not self.folder.is_dir():
            return []
        return sorted(p for p in self.folder.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES)

    def _spec(self, path: Path) -> UpscalerSpec | None:
        stat = path.stat()
        stamp = (stat.st_size, stat.st_mtime_ns)
        cached = self._specs.get(path)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        try:
            spec = inspect_state(read_state_dict(path))[0]
        except UpscalerFileError as error:
            message = str(error)
            warnings.warn(message if message.startswith(str(path)) else f"{path}: {message}", stacklevel=3)
            return None
        self._specs[path] = (stamp, spec)
        return spec

    def entries(self) -> list[UpscalerEntry]:
        """The plain upscalers, then one entry per readable file (first of equal stems wins)."""
        found = [UpscalerEntry(name) for name in PLAIN_UPSCALERS]
        names = set(PLAIN_UPSCALERS)
        with self._lock:
            for path in self.files():
                spec = self._spec(path)
                if spec is not None and path.stem not in names:
                    names.add(path.stem)
                    found.append(UpscalerEntry(path.stem, path, spec))
        return found

    def find(self, name: str) -> UpscalerEntry:
        entries = self.entries()
        for entry in entries:
            if entry.name == name:
                return entry
        for entry in entries:  # sd-webui matches upscaler names case-insensitively in the API
            if entry.name.lower() == name.lower():
                return entry
        where = f" in {self.folder}" if self.folder is not None else ""
        raise UpscaleError(f"unknown upscaler {name!r}{where}; known: {', '.join(e.name for e in entries)}")

    def get(self, name: str) -> Upscaler:
        """A ready :class:`Upscaler` for ``name`` (the network loaded on this registry's device)."""
        entry = self.find(name)
        if entry.path is None:
            return Upscaler(entry.name, tile=self.tile, device=self.device, limit=self.limit)
        with self._lock:
            if self._loaded is not None and self._loaded[0] == str(entry.path):
                return self._loaded[1]
            model, spec = load_upscaler(entry.path)
            upscaler = Upscaler(entry.name, model.to(self.device), spec, self.tile, self.device, self.limit)
            self._loaded = (str(entry.path), upscaler)
            return upscaler


__all__ = ["DEFAULT_DIR", "UpscalerEntry", "UpscalerRegistry"]
