"""The server's settings, sd-webui's /options: a flat dict, plus the current model.

Only known keys are kept (an unknown key is ignored, as sd-webui's ``opts.set`` ignores it); a value
of the wrong type is a 422. ``sd_model_checkpoint`` is the current model's title.
"""

from __future__ import annotations

from typing import Any

from genpix.server.catalog import ModelCatalog, ModelEntry
from genpix.server.errors import ApiError

DEFAULTS: dict[str, Any] = {
    "samples_format": "png",
    "enable_pnginfo": True,
    "return_grid": False,
    "live_previews_enable": True,
    "show_progress_every_n_steps": 1,
    "CLIP_stop_at_last_layers": 1,
    "eta_noise_seed_delta": 0,
    "sd_vae": "None",
}


class Options:
    def __init__(self, catalog: ModelCatalog, model: str | None = None) -> None:
        self.catalog, self._preferred = catalog, model
        self.values = dict(DEFAULTS)
        self._current: ModelEntry | None = None

    @property
    def model(self) -> ModelEntry:
        """The current model (the --model one, else the first bundled/found one)."""
        if self._current is None:
            self._current = self.catalog.default(self._preferred)
        return self._current

    @model.setter
    def model(self, entry: ModelEntry) -> None:
        self._current = entry

    def as_dict(self) -> dict[str, Any]:
        model = self.model
        return {**self.values, "sd_model_checkpoint": model.title, "sd_checkpoint_hash": model.sha256}

    def update(self, values: dict[str, Any]) -> None:
        """Set the known keys (not sd_model_checkpoint: switching models is a job, see the API)."""
        for key, value in values.items():
            if key not in self.values:
                continue
            default = self.values[key]
            if type(value) is not type(default) and not (type(default) is float and type(value) is int):
                raise ApiError(f"option {key!r} must be a {type(default).__name__}, got {value!r}", 422)
            self.values[key] = value
