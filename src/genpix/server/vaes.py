"""The VAE files a server offers for SD models (sd-webui's ``sd_vae`` setting, /sd-vae, /refresh-vae).

Files under ``--vae-dir`` (default ``models/VAE``, as sd-webui's) with a weights suffix, by file name
(sd-webui's ``model_name``); a request names one by that name, never by a path. "Automatic" and
"None" are the model's own VAE.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from genpix.server.errors import ApiError

VAE_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".bin")
OWN_VAE = ("automatic", "none")  # sd-webui's choices that keep the model's VAE


@dataclass(frozen=True)
class VaeFile:
    model_name: str  # the file name, e.g. "vae-ft-mse-840000-ema-pruned.safetensors"
    path: Path

    def describe(self) -> dict[str, str]:
        """sd-webui's /sd-vae item."""
        return {"model_name": self.model_name, "filename": str(self.path.resolve())}


class VaeFolder:
    """The VAE files under ``folder`` (missing folder: none), found again by :meth:`refresh`."""

    def __init__(self, folder: str | Path | None) -> None:
        self.folder = Path(folder) if folder else None
        self.files: list[VaeFile] = []
        self.refresh()

    def refresh(self) -> list[VaeFile]:
        found = []
        if self.folder is not None and self.folder.is_dir():
            found = [VaeFile(p.name, p) for p in sorted(self.folder.rglob("*"))
                     if p.is_file() and p.suffix.lower() in VAE_SUFFIXES]
        self.files = found
        return found

    def find(self, name: str) -> VaeFile | None:
        """The file named ``name`` (with or without its suffix); None for "Automatic"/"None"; a 422
        listing the files for another name."""
        folded = name.strip().casefold()
        if folded in OWN_VAE:
            return None
        for vae in self.files:
            if folded in (vae.model_name.casefold(), vae.path.stem.casefold()):
                return vae
        known = ", ".join(v.model_name for v in self.files) or f"none in {self.folder}"
        raise ApiError(f"unknown VAE {name!r}; the VAE files: Automatic, None, {known}", 422)
