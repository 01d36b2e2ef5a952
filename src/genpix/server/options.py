"""The server's settings, sd-webui's /options: a flat dict, plus the current model.

Only known keys are kept (an unknown key is ignored, as sd-webui's ``opts.set`` ignores it); a value
of the wrong type or outside its choices is a 422, and then no key of that body is set (a refused
POST changes nothing). ``sd_model_checkpoint`` is the current model's title. GET after POST returns
what was set.
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
    "show_progress_every_n_steps": 1,  # a live preview every N sampling steps (<= 0: none while sampling)
    "CLIP_stop_at_last_layers": 1,
    "eta_noise_seed_delta": 0,
    "eta_ancestral": 1.0,  # eta of the samplers that take one (Euler a, DPM++ SDE, ...) when a request has none
    "eta_ddim": 0.0,  # DDIM's
    "randn_source": "CPU",  # genpix draws every noise on the CPU; "GPU"/"NV" are named in info["ignored"]
    "sd_vae": "Automatic",  # a file of --vae-dir for SD models; "Automatic"/"None": the model's own
    "token_merging_ratio": 0.0,  # ToMe for SD in the cross-attention U-Nets (models/tome.py); 0: off
    # genpix's (pipelines/fast.py): DeepCache, a full U-Net pass every N calls (0: off), its skip branch
    # after the finest level's K-th down layer (0: the whole level); the tiny (TAESD) final decoder
    "deepcache_interval": 0,
    "deepcache_block": 0,
    "tiny_decode": False,
    # the preview shows the guided x0 ("Combined"); "Prompt" / "Negative prompt" (one CFG branch's x0) are
    # accepted and named in info["ignored"]
    "live_preview_content": "Combined",
    # "Zero Terminal SNR": SD models sample on their schedule rescaled to zero terminal SNR (pipelines/parts.py)
    "sd_noise_schedule": "Default",
}
CHOICES: dict[str, tuple[str, ...]] = {"randn_source": ("GPU", "CPU", "NV"),
                                      "live_preview_content": ("Combined", "Prompt", "Negative prompt"),
                                      "sd_noise_schedule": ("Default", "Zero Terminal SNR")}
MINIMUM: dict[str, float] = {"CLIP_stop_at_last_layers": 1, "eta_noise_seed_delta": 0, "eta_ancestral": 0,
                             "token_merging_ratio": 0, "eta_ddim": 0, "deepcache_interval": 0,
                             "deepcache_block": 0}


def check_value(key: str, value: Any, where: str = "option") -> Any:
    """``value`` for the known ``key`` when its type and range fit (an int for a float key is a float),
    else a 422 naming ``where`` and the key."""
    default = DEFAULTS[key]
    if type(default) is float and type(value) is int:
        value = float(value)
    if type(value) is not type(default):
        raise ApiError(f"{where} {key!r} must be a {type(default).__name__}, got {value!r}", 422)
    if key in CHOICES and value not in CHOICES[key]:
        raise ApiError(f"{where} {key!r} must be one of {', '.join(CHOICES[key])}, got {value!r}", 422)
    if key in MINIMUM and value < MINIMUM[key]:
        raise ApiError(f"{where} {key!r} must be at least {MINIMUM[key]}, got {value!r}", 422)
    return value


class Options:
    def __init__(self, catalog: ModelCatalog, model: str | None = None, check_vae=None) -> None:
        self.catalog, self._preferred = catalog, model
        self.check_vae = check_vae  # sd_vae's names (server/vaes.py VaeFolder.find), or None: any
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

    def checked(self, values: dict[str, Any], where: str = "option") -> dict[str, Any]:
        """The known keys of ``values``, each checked (a 422 for the first bad one), and the settings
        they make with the others; nothing is set."""
        out = {key: check_value(key, value, where) for key, value in values.items() if key in DEFAULTS}
        if "sd_vae" in out and self.check_vae is not None:
            self.check_vae(out["sd_vae"])
        merged = {**self.values, **out}
        if merged["deepcache_block"] and not merged["deepcache_interval"]:
            raise ApiError(f"{where} 'deepcache_block' needs 'deepcache_interval' above 0 (DeepCache is off)", 422)
        return out

    def update(self, values: dict[str, Any]) -> None:
        """Set the known keys, all or none (not sd_model_checkpoint: switching models is a job, see the API)."""
        self.values.update(self.checked(values))
