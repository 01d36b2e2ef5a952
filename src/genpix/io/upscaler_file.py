"""Upscaler weight files: ESRGAN / Real-ESRGAN RRDBNet and Real-ESRGAN SRVGGNetCompact.

Reads ``.pth`` / ``.pt`` with ``torch.load(weights_only=True)`` (a pickle that would build any
object other than tensors and plain containers is refused, nothing in it runs) and ``.safetensors``.
A ``params_ema`` (preferred, as BasicSR and spandrel do) or ``params`` wrapper is unwrapped, and so
is the ``upscaler.`` role prefix of a ``genpix train upscaler`` run's ``model.safetensors``.
The architecture and its hyper-parameters come from the keys and shapes alone
(shared/reference/sdxl-lora-upscalers.md section 4.1-4.2):

* RRDBNet, BasicSR / Real-ESRGAN layout: ``conv_first``, ``body.N.rdbK.convJ``, ``conv_body``,
  ``conv_upK``, ``conv_hr``, ``conv_last``;
* RRDBNet, old ESRGAN layout: ``model.0``, ``model.1.sub.N.RDBK.convJ.0``, ``model.1.sub.NB``,
  ``model.3``/``6``/``9`` (upsampling convs), then ``model.{3n+2}`` and ``model.{3n+4}``;
* RRDBNet, BSRGAN layout: ``RRDB_trunk.N.RDBK.convJ``, ``trunk_conv``, ``upconvK``, ``HRconv``;
* SRVGGNetCompact: ``body.0`` conv, ``body.1`` PReLU, ..., ``body.{2n+2}`` conv to ``c * s^2``.

Files are written in the BasicSR layout (``{"params_ema": ...}`` in a ``.pth``, or flat in a
``.safetensors``), the layout Real-ESRGAN, spandrel and sd-webui read.
"""

from __future__ import annotations

import math
import pickle
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from genpix.errors import GenpixError
from genpix.io.atomic import write_atomic
from genpix.models.rrdbnet import RRDBNet, RRDBNetConfig
from genpix.models.srvgg import SRVGGNetCompact, SRVGGNetConfig

SUFFIXES = (".pth", ".pt", ".safetensors")
SUPPORTED = ("ESRGAN / Real-ESRGAN RRDBNet (model.N, conv_first/body.N.rdbK or RRDB_trunk keys)",
             "Real-ESRGAN SRVGGNetCompact (body.N keys with PReLU)")


class UpscalerFileError(GenpixError):
    """An upscaler file that is missing, unreadable, unsafe or of an unknown architecture."""


@dataclass(frozen=True)
class UpscalerSpec:
    """What a file holds: the architecture's name and the config that rebuilds it."""

    architecture: str  # "ESRGAN" (RRDBNet) or "SRVGGNetCompact"
    config: RRDBNetConfig | SRVGGNetConfig
    layout: str = "BasicSR"  # key layout of the file: "ESRGAN" (model.N), "BSRGAN", "BasicSR" or "SRVGG"

    @property
    def real_esrgan(self) -> bool:
        """Real-ESRGAN's own formats: BasicSR-layout RRDBNet or SRVGGNetCompact."""
        return self.layout in ("BasicSR", "SRVGG")

    @property
    def scale(self) -> int:
        return self.config.scale

    @property
    def channels(self) -> int:
        return self.config.channels


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of an upscaler file, ``params_ema``/``params`` unwrapped; never runs code."""
    path = Path(path)
    if not path.is_file():
        raise UpscalerFileError(f"{path}: no such upscaler file")
    if path.suffix.lower() == ".safetensors":
        try:
            state = load_file(path)
        except (SafetensorError, OSError, ValueError) as error:
            raise UpscalerFileError(f"{path} is not a readable safetensors file ({error})") from None
    elif path.suffix.lower() in (".pth", ".pt"):
        state = _torch_load(path)
    else:
        raise UpscalerFileError(f"{path}: upscaler files must end in {', '.join(SUFFIXES)}")
    for wrapper in ("params_ema", "params", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
            break
    if isinstance(state, dict) and state and all(str(k).startswith("upscaler.") for k in state):
        state = {k.removeprefix("upscaler."): v for k, v in state.items()}  # a genpix run's model.safetensors
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise UpscalerFileError(f"{path} does not hold a state dict of tensors")
    return state


def _torch_load(path: Path) -> object:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # the weights-only unpickler met a class, a function or bad data
        raise UpscalerFileError(f"{path} is not a weights-only PyTorch file (it holds other pickled objects "
                                f"or is corrupt); refused: genpix never runs code from a file") from None
    except (RuntimeError, OSError, EOFError, ValueError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UpscalerFileError(f"{path} is not a readable PyTorch weights file ({first})") from None


# --- layouts -----------------------------------------------------------------------------------


def _from_old_esrgan(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``model.N`` keys -> BasicSR names: seq = conv, shortcut, (up, conv, act) x n, conv, act, conv."""
    top = max(int(k.split(".")[1]) for k in state if re.match(r"model\.\d+\.", k))
    n_up = (top + 1 - 5) // 3  # sequence length 5 + 3 n (spandrel's _get_scale)
    names = {"model.0": "conv_first", f"model.{3 * n_up + 2}": "conv_hr", f"model.{3 * n_up + 4}": "conv_last"}
    names.update({f"model.{3 * k}": f"conv_up{k}" for k in range(1, n_up + 1)})
    blocks = {int(m.group(1)) for k in state if (m := re.match(r"model\.1\.sub\.(\d+)\.RDB", k))}
    names[f"model.1.sub.{len(blocks)}"] = "conv_body"
    out = {}
    for key, value in state.items():
        m = re.fullmatch(r"model\.1\.sub\.(\d+)\.RDB(\d)\.conv(\d)\.0\.(weight|bias)", key)
        if m:
            out[f"body.{m[1]}.rdb{m[2]}.conv{m[3]}.{m[4]}"] = value
            continue
        module, _, kind = key.rpartition(".")
        out[f"{names.get(module, module)}.{kind}"] = value  # an unknown module stays and fails the load
    return out


def _from_bsrgan(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """BSRGAN / RealSR names -> BasicSR names."""
    renames = ((r"RRDB_trunk\.(\d+)\.RDB(\d)\.", r"body.\1.rdb\2."), (r"trunk_conv\.", "conv_body."),
               (r"upconv(\d)\.", r"conv_up\1."), (r"HRconv\.", "conv_hr."))
    out = {}
    for key, value in state.items():
        for pattern, repl in renames:
            key = re.sub(f"^{pattern}", repl, key)
        out[key] = value
    return out


def to_basicsr_layout(state: dict[str, torch.Tensor]) -> tuple[str, dict[str, torch.Tensor]]:
    """(layout, state dict in genpix's = BasicSR's module names) of any supported layout."""
    if "model.0.weight" in state and "model.1.sub.0.RDB1.conv1.0.weight" in state:
        return "ESRGAN", _from_old_esrgan(state)
    if "conv_first.weight" in state and "RRDB_trunk.0.RDB1.conv1.weight" in state:
        return "BSRGAN", _from_bsrgan(state)
    if "conv_first.weight" in state and "body.0.rdb1.conv1.weight" in state:
        return "BasicSR", dict(state)
    body1 = state.get("body.1.weight")
    if "body.0.weight" in state and body1 is not None and body1.dim() == 1:
        return "SRVGG", dict(state)
    sample = ", ".join(sorted(state)[:3]) or "no tensors"
    if any(".conv1x1." in k for k in state):
        sample = "ESRGAN+ conv1x1 keys"
    raise UpscalerFileError(f"unknown upscaler architecture ({sample}); genpix reads: {'; '.join(SUPPORTED)}")


# --- hyper-parameters from shapes ----------------------------------------------------------------


def _rrdb_config(state: dict[str, torch.Tensor]) -> RRDBNetConfig:
    first, last = state["conv_first.weight"], state.get("conv_last.weight")
    if last is None:
        raise UpscalerFileError("RRDBNet weights without conv_last (the output conv)")
    nf, c_in, c = first.shape[0], first.shape[1], last.shape[0]
    ratio = c_in / c
    if ratio not in (1, 4, 16):
        raise UpscalerFileError(f"RRDBNet with {c_in} input and {c} output channels: the input must have "
                                f"1x, 4x or 16x (pixel-unshuffled) the output channels")
    unshuffle = int(math.isqrt(int(ratio)))
    n_up = len({k.split(".")[0] for k in state if re.match(r"conv_up\d+\.", k)})
    trunk = 2**n_up
    if trunk % unshuffle:
        raise UpscalerFileError(f"RRDBNet with a x{trunk} trunk cannot pixel-unshuffle its input by {unshuffle}")
    blocks = {int(k.split(".")[1]) for k in state if k.startswith("body.")}
    return RRDBNetConfig(scale=trunk // unshuffle, channels=c, num_features=nf, num_blocks=len(blocks),
                         growth_channels=state["body.0.rdb1.conv1.weight"].shape[0], unshuffle=unshuffle)


def _srvgg_config(state: dict[str, torch.Tensor]) -> SRVGGNetConfig:
    top = max(int(k.split(".")[1]) for k in state if re.match(r"body\.\d+\.", k))
    first, last = state["body.0.weight"], state.get(f"body.{top}.weight")
    c = first.shape[1]
    scale = math.isqrt(last.shape[0] // c) if last is not None and last.dim() == 4 else 0
    if scale < 1 or scale * scale * c != last.shape[0]:
        raise UpscalerFileError(f"SRVGGNetCompact whose last conv (body.{top}) is not channels x scale^2 wide")
    return SRVGGNetConfig(scale=scale, channels=c, num_features=first.shape[0], num_conv=(top - 2) // 2)


def inspect_state(state: dict[str, torch.Tensor]) -> tuple[UpscalerSpec, dict[str, torch.Tensor]]:
    """(spec, state dict in genpix's module names); a config the shapes do not allow is one line."""
    layout, state = to_basicsr_layout(state)
    architecture = "SRVGGNetCompact" if layout == "SRVGG" else "ESRGAN"
    try:
        config = _rrdb_config(state) if architecture == "ESRGAN" else _srvgg_config(state)
    except GenpixError as error:
        if isinstance(error, UpscalerFileError):
            raise
        raise UpscalerFileError(f"{architecture} weights of an unsupported shape: {error}") from None
    return UpscalerSpec(architecture, config, layout), state


def build_upscaler(spec: UpscalerSpec) -> nn.Module:
    return RRDBNet(spec.config) if spec.architecture == "ESRGAN" else SRVGGNetCompact(spec.config)


def load_upscaler(path: str | Path) -> tuple[nn.Module, UpscalerSpec]:
    """The network in an upscaler file, in eval mode, and what it is; every problem is one line."""
    try:
        spec, state = inspect_state(read_state_dict(path))
    except UpscalerFileError as error:
        message = str(error)
        raise UpscalerFileError(message if message.startswith(str(path)) else f"{path}: {message}") from None
    model = build_upscaler(spec)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        what = f"missing {missing[0]}" if missing else f"unexpected {unexpected[0]}"
        raise UpscalerFileError(f"{path}: {spec.architecture} weights do not match the architecture ({what})")
    for key, tensor in expected.items():
        if state[key].shape != tensor.shape:
            raise UpscalerFileError(f"{path}: {key} has shape {tuple(state[key].shape)}, "
                                    f"the architecture needs {tuple(tensor.shape)}")
    model.load_state_dict({k: v.float() for k, v in state.items()})
    return model.eval().requires_grad_(False), spec


def save_upscaler(model: nn.Module, path: str | Path) -> Path:
    """Write ``model``'s weights in BasicSR's layout: ``.pth`` as ``{"params_ema": ...}`` (what
    Real-ESRGAN releases hold), or a flat ``.safetensors``; atomically."""
    path = Path(path)
    state = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in model.state_dict().items()}
    if path.suffix.lower() == ".safetensors":
        return write_atomic(path, lambda p: save_file(state, p))
    if path.suffix.lower() in (".pth", ".pt"):
        return write_atomic(path, lambda p: torch.save({"params_ema": state}, p))
    raise UpscalerFileError(f"{path}: upscaler files must end in {', '.join(SUFFIXES)}")


__all__ = ["SUFFIXES", "SUPPORTED", "UpscalerFileError", "UpscalerSpec", "build_upscaler", "inspect_state",
           "load_upscaler", "read_state_dict", "save_upscaler", "to_basicsr_layout"]
