"""The settings one request runs with: the server's /options with the request's ``override_settings``
over them, for that request only (sd-webui's override_settings; the shared options never change).

Checked before the job is queued, so a bad value is a 422 and the request changes nothing. Honoured:
``CLIP_stop_at_last_layers`` (clip skip), ``eta_noise_seed_delta``, ``eta_ancestral`` (eta of the
samplers that take one, when the request has no ``eta``), ``eta_ddim`` (DDIM's), ``sd_vae`` (a
--vae-dir file, SD models), ``randn_source`` "CPU" (genpix draws its noise on the CPU: "GPU" and
"NV" are named in ``info["ignored"]``), ``sd_noise_schedule`` ("Zero Terminal SNR": SD models sample on
the schedule rescaled to zero terminal SNR; other models name it in ``info["ignored"]``),
``token_merging_ratio`` (sd-webui's ToMe), genpix's ``deepcache_interval``, ``deepcache_block`` and
``tiny_decode`` (pipelines/fast.py; a model that cannot honour one names it in ``info["ignored"]``) and
``sd_model_checkpoint`` (server/api.py). Every other
``override_settings`` key is named in ``info["ignored"]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from genpix.diffusion import samplers
from genpix.errors import GenpixError
from genpix.pipelines.capabilities import LESS_WORK_FIELDS
from genpix.pipelines.fast import unsupported_switches
from genpix.server.options import Options
from genpix.server.vaes import VaeFile, VaeFolder

HONOURED_SETTINGS = ("sd_model_checkpoint", "CLIP_stop_at_last_layers", "eta_noise_seed_delta", "eta_ancestral",
                     "eta_ddim", "sd_vae", "randn_source", "token_merging_ratio", "live_preview_content",
                     "sd_noise_schedule", "deepcache_interval", "deepcache_block", "tiny_decode")
LESS_WORK_SETTINGS = LESS_WORK_FIELDS  # pipelines/fast.py's switches, each a setting of the same name


@dataclass(frozen=True)
class RequestSettings:
    clip_skip: int = 1
    eta_noise_seed_delta: int = 0
    eta_ancestral: float = 1.0
    eta_ddim: float = 0.0
    vae: VaeFile | None = None  # None: the model's own
    token_merging_ratio: float = 0.0  # sd-webui's option: ToMe for SD (pipelines/fast.py)
    noise_schedule: str = "Default"  # sd-webui's sd_noise_schedule (pipelines/parts.py with_noise_schedule)
    ignored: tuple[str, ...] = ()  # settings given but not honoured
    deepcache_interval: int = 0  # genpix's DeepCache (pipelines/fast.py); 0: off
    deepcache_block: int = 0
    tiny_decode: bool = False  # the final pictures from the model's tiny decoder

    def less_work(self, pipe) -> tuple[dict[str, Any], list[str]]:
        """The less-work request fields for ``pipe`` and the names of those on that it cannot honour
        (dropped; a model without a sampler drops them all when the request is bound)."""
        fields = {name: getattr(self, name) for name in LESS_WORK_SETTINGS}
        if not pipe.capabilities.diffusion:
            return fields, []  # the lenient binder names them (pipelines/capabilities.py)
        unsupported = [name for name in unsupported_switches(pipe.parts) if fields[name]]
        return {**fields, **{name: type(fields[name])() for name in unsupported}}, unsupported  # off: 0, False

    def eta(self, pipe, sampler: str | None) -> float | None:
        """The eta for a request without one: eta_ddim for DDIM, eta_ancestral for the other samplers
        that take eta (sd-webui's sd_samplers_kdiffusion), None where it is the default or not taken."""
        defaults = pipe.capabilities.defaults
        name = sampler or (defaults.sampler if defaults is not None else None)
        try:
            info = samplers.get(name) if name else None
        except GenpixError:
            return None  # the binder names the unknown sampler
        if info is None or "eta" not in info.options:
            return None
        value, default = (self.eta_ddim, 0.0) if info.name == "DDIM" else (self.eta_ancestral, 1.0)
        return None if value == default else value


def request_settings(options: Options, vaes: VaeFolder, override: dict[str, Any] | None) -> RequestSettings:
    """The request's settings (a 422 for a bad override value; nothing shared is changed)."""
    override = override or {}
    given = options.checked(override, "override_settings")
    values = {**options.values, **given}
    ignored = [f"override_settings.{key}" for key in override if key not in HONOURED_SETTINGS]
    for key, honoured in (("randn_source", "CPU"), ("live_preview_content", "Combined")):
        if values[key] != honoured:
            ignored.append(f"override_settings.{key}" if key in given else key)
    return RequestSettings(values["CLIP_stop_at_last_layers"], values["eta_noise_seed_delta"],
                           values["eta_ancestral"], values["eta_ddim"], vaes.find(values["sd_vae"]),
                           values["token_merging_ratio"], values["sd_noise_schedule"], tuple(ignored),
                           values["deepcache_interval"], values["deepcache_block"], values["tiny_decode"])
