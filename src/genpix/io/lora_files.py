"""LoRA and LyCORIS files as sd-webui reads them: tensors grouped by the module they change.

Every format is brought to kohya's naming (sd-scripts ``networks/lora.py``; sd-webui
``extensions-builtin/Lora/networks.py`` ``load_network``): a module key such as
``lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q`` (the module's path with
``_`` for ``.``) and its parts after the first ``.``:

- kohya / sd-webui LoRA and LoCon: ``lora_down.weight`` [r, in(, k, k)], ``lora_up.weight``
  [out, r(, 1, 1)], optional ``lora_mid.weight`` (CP decomposition), ``alpha``;
- LyCORIS LoHa ``hada_w1_a``, ``hada_w1_b``, ``hada_w2_a``, ``hada_w2_b`` (``hada_t1``, ``hada_t2``),
  LoKr ``lokr_w1`` or ``lokr_w1_a``/``_b``, ``lokr_w2`` or ``lokr_w2_a``/``_b`` (``lokr_t2``),
  full ``diff``; DoRA's ``dora_scale``; an optional ``scale``;
- diffusers / PEFT ``unet.<path>.lora_A.weight`` / ``.lora_B.weight`` (``text_encoder.``,
  ``text_encoder_2.``) become ``lora_down`` / ``lora_up`` of ``lora_unet_``, ``lora_te_`` (or
  ``lora_te1_``), ``lora_te2_``; PEFT's alpha comes from the ``lora_adapter_metadata`` header
  (``lora_alpha``, ``alpha_pattern``) or per-key ``.alpha`` tensors; ``lora_magnitude_vector`` is
  DoRA's magnitude. diffusers' older ``processor.to_q_lora.down`` names are renamed the same way.

The short hash sd-webui writes to the infotext (``Lora hashes``) is the first 12 hex digits of
the sha256 of a safetensors file's bytes after its header (``modules/hashes.py``
``addnet_hash_safetensors``), of the whole file otherwise. ``.pt`` files are read with
``torch.load(weights_only=True)`` only (io/sd_checkpoint.py ``read_state_dict``): a pickle that
would run code is refused and nothing in it is executed.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass, field
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from genpix.errors import GenpixError
from genpix.io.sd_checkpoint import read_state_dict

NETWORK_SUFFIXES = (".safetensors", ".pt", ".ckpt", ".bin")
PEFT_PREFIXES = {"unet.": "lora_unet_", "text_encoder.": "lora_te_", "text_encoder_2.": "lora_te2_",
                 "te1.": "lora_te1_", "te2.": "lora_te2_"}
# PEFT / old diffusers part names -> kohya's
PART_RENAMES = {"lora_A.weight": "lora_down.weight", "lora_B.weight": "lora_up.weight",
                "lora.down.weight": "lora_down.weight", "lora.up.weight": "lora_up.weight",
                "lora_linear_layer.down.weight": "lora_down.weight",
                "lora_linear_layer.up.weight": "lora_up.weight",
                "down.weight": "lora_down.weight", "up.weight": "lora_up.weight",
                "lora_magnitude_vector": "dora_scale", "lora_magnitude_vector.weight": "dora_scale"}
OLD_PROCESSOR = {"to_q_lora": "to_q", "to_k_lora": "to_k", "to_v_lora": "to_v", "to_out_lora": "to_out.0"}


class NetworkFileError(GenpixError):
    """A LoRA / LyCORIS file that cannot be read or whose keys are not a known format."""


@dataclass(frozen=True)
class NetworkFile:
    """One LoRA / LyCORIS file: its module groups (kohya names) and what sd-webui lists of it."""

    path: Path
    modules: dict[str, dict[str, torch.Tensor]]  # module key -> part -> tensor
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.path.stem

    @property
    def alias(self) -> str:
        """sd-webui's alias: the training run's ``ss_output_name``, else the file name."""
        return self.metadata.get("ss_output_name") or self.name


def read_metadata(path: Path) -> dict[str, str]:
    """The ``__metadata__`` strings of a safetensors header ({} for other files)."""
    if path.suffix != ".safetensors":
        return {}
    try:
        with safe_open(str(path), framework="pt") as handle:
            return dict(handle.metadata() or {})
    except (SafetensorError, OSError) as error:
        raise NetworkFileError(f"{path} is not a readable safetensors file ({error})") from None


def read_network_file(path: str | Path) -> NetworkFile:
    """The file's tensors grouped per module, in kohya names (see the module docstring)."""
    path = Path(path)
    if path.suffix not in NETWORK_SUFFIXES:
        raise NetworkFileError(f"{path}: not a LoRA file (use {', '.join(NETWORK_SUFFIXES)})")
    tensors = read_state_dict(path)
    metadata = read_metadata(path)
    return NetworkFile(path, group_modules(tensors, metadata, str(path)), metadata)


def group_modules(tensors: dict[str, torch.Tensor], metadata: dict[str, str],
                  where: str = "LoRA") -> dict[str, dict[str, torch.Tensor]]:
    """{module key: {part: tensor}} in kohya's names, PEFT alphas filled in from the metadata."""
    alpha_of = _peft_alphas(metadata)
    groups: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        module, part = _split_key(key)
        groups.setdefault(module, {})[part] = tensor
    if not groups:
        raise NetworkFileError(f"{where} holds no LoRA tensors")
    for module, parts in groups.items():
        alpha = alpha_of(module)
        if "alpha" not in parts and alpha is not None:
            parts["alpha"] = torch.tensor(float(alpha))
    return groups


def _split_key(key: str) -> tuple[str, str]:
    """'lora_unet_x.lora_down.weight' -> ('lora_unet_x', 'lora_down.weight'); PEFT keys renamed."""
    for prefix, kohya in PEFT_PREFIXES.items():
        if key.startswith(prefix):
            rest = key[len(prefix):]
            for old, new in OLD_PROCESSOR.items():
                rest = rest.replace(f"processor.{old}.", f"{new}.")
            for old, new in PART_RENAMES.items():
                if rest.endswith("." + old):
                    return kohya + rest[:-len(old) - 1].replace(".", "_"), new
            path, _, last = rest.rpartition(".")
            return kohya + path.replace(".", "_"), last  # alpha, dora_scale
    module, _, part = key.partition(".")
    return module, part


def _peft_alphas(metadata: dict[str, str]) -> Callable[[str], float | None]:
    """PEFT's LoraConfig in the header (diffusers' ``lora_adapter_metadata``): module key -> its
    ``alpha_pattern`` entry (matched on the end of the name), else ``lora_alpha``; None without one."""
    raw = metadata.get("lora_adapter_metadata")
    try:
        config = json.loads(raw) if raw else {}
    except json.JSONDecodeError:
        raise NetworkFileError("lora_adapter_metadata is not valid JSON") from None
    config = config if isinstance(config, dict) else {}
    patterns = {k.replace(".", "_"): v for k, v in (config.get("alpha_pattern") or {}).items()}
    return lambda module: next((v for p, v in patterns.items() if module.endswith(p)), config.get("lora_alpha"))


def short_hash(path: str | Path) -> str:
    """sd-webui's 12-hex-digit LoRA hash: sha256 of a safetensors file's tensor bytes (after its
    header, ``addnet_hash_safetensors``), of the whole file for other formats."""
    path = Path(path)
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        if path.suffix == ".safetensors":
            (length,) = struct.unpack("<Q", handle.read(8))
            handle.seek(8 + length)
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:12]


def list_network_files(folder: str | Path) -> dict[str, Path]:
    """Stem -> file of every LoRA file under ``folder`` (sub-folders included, sorted; sd-webui's
    list_available_networks); a missing folder lists nothing."""
    folder = Path(folder)
    if not folder.is_dir():
        return {}
    found: dict[str, Path] = {}
    for path in sorted(folder.rglob("*")):
        if path.suffix in NETWORK_SUFFIXES and path.is_file():
            found.setdefault(path.stem, path)
    return found
