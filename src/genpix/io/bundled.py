"""The models shipped inside the package (``genpix/bundled/NAME``) and finding a MODEL argument:
a model folder or a bundled model's name."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from genpix.errors import GenpixError


def bundled_root() -> Path:
    return Path(str(resources.files("genpix") / "bundled"))


def bundled_models() -> dict[str, Path]:
    """Bundled model name -> folder (models shipped inside the package)."""
    root = bundled_root()
    if not root.is_dir():
        return {}
    return {p.name: p for p in sorted(root.iterdir()) if (p / "config.json").is_file()}


def resolve_model(name_or_path: str | Path) -> Path:
    """A folder path as given, else a bundled model's folder; else a one-line error."""
    path = Path(name_or_path)
    if path.exists():
        return path
    bundled = bundled_models()
    if str(name_or_path) in bundled:
        return bundled[str(name_or_path)]
    names = ", ".join(bundled) or "none installed"
    raise GenpixError(f"no model folder or bundled model named {str(name_or_path)!r} "
                      f"(bundled models: {names})")
