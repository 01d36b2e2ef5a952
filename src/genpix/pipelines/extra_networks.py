"""sd-webui's extra networks in prompts: ``<lora:NAME:WEIGHT>`` applied for one generation.

Syntax (modules/extra_networks.py ``parse_prompt``, extensions-builtin/Lora/extra_networks_lora.py):
``<lora:NAME>``, ``<lora:NAME:TE>``, ``<lora:NAME:TE:UNET>``, ``<lora:NAME:TE:UNET:DYN>`` (DYN keeps
the first DYN ranks of every LoRA layer, the scale still alpha / r: sd-webui's ``dyn_dim``),
or named ``te=``, ``unet=``, ``dyn=``; the U-Net weight defaults to the text encoder's, which
defaults to 1. ``lyco`` is the same as ``lora``. NAME is a file stem in the LoRA folder (sd-webui's
``models/Lora``, sub-folders included) or its training alias (``ss_output_name``). Tags are removed
from the prompt before it is encoded; several in one prompt each apply; tags of other types
(``<hypernet:...>``) are removed too, with a warning. The infotext records
``Lora hashes: "NAME: 0123456789ab, ..."`` (io/lora_files.py ``short_hash``).

:class:`NetworkLibrary` owns a pipeline's folders and caches: parsed files (by path, size and
mtime) and the merged weights of the last network set (kept while that set repeats, so a run of
requests with the same LoRA merges once). ``with library.applied(unet, {"lora_te_": text_model},
specs):`` computes with the networks merged and restores the exact original weights on exit
(models/lora_apply.py); concurrent requests on one model take turns (a request without networks
waits too, so it never sees another's merged weights).

The generation core's hook is :func:`activated`: ``DiffusionPipeline.generate`` runs inside it with
``parts.networks`` (an :class:`ExtraNetworks`: the LoRA folder, the embeddings folder, the CLI's
``--lora`` specs). It applies the request's tags (prompt and negative prompt, as sd-webui) and
publishes the request's :class:`Activation` in a context variable, from which prompt_chunks takes the
textual-inversion embeddings (io/embeddings.py) and the infotext its ``Lora hashes`` / ``TI hashes``
(:func:`network_notes`).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from contextvars import ContextVar
from dataclasses import dataclass, field
from difflib import get_close_matches
from pathlib import Path

import torch
from torch import nn

from genpix.errors import GenpixError
from genpix.io.lora_files import NetworkFile, list_network_files, read_metadata, read_network_file, short_hash
from genpix.models.lora import network_scale
from genpix.models.lora_apply import check_changes, merged_weights, swap_lock, swapped_weights, target_table

DEFAULT_LORA_DIR = "models/Lora"
NETWORK_TYPES = ("lora", "lyco")
_EXTRA_NETWORK = re.compile(r"<(\w+):([^>]+)>")  # sd-webui's re_extra_net


class ExtraNetworkError(GenpixError, ValueError):
    """A malformed ``<lora:...>`` tag, an unknown name, or a file that does not fit the model."""


@dataclass(frozen=True)
class NetworkSpec:
    """One ``<lora:NAME:TE:UNET>`` tag, or one ``--lora PATH:WEIGHT``."""

    name: str  # the file stem (or alias) as written, or a path
    te: float = 1.0  # multiplier of the text encoders' changes
    unet: float = 1.0  # multiplier of the U-Net's changes
    dyn: int | None = None  # keep only the first ``dyn`` ranks (sd-webui's dyn_dim); None: all


def _weight(text: str, tag: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ExtraNetworkError(f"LoRA weight {text!r} in {tag} is not a number") from None


def _spec(args: str, tag: str) -> NetworkSpec:
    """NAME[:TE[:UNET[:DYN]]] or named te= / unet= / dyn= (sd-webui's ExtraNetworkParams)."""
    items = [a.strip() for a in args.split(":")]
    named = {k.strip(): v for k, _, v in (a.partition("=") for a in items[1:] if "=" in a)}
    positional = [a for a in items[1:] if "=" not in a]
    if not items[0]:
        raise ExtraNetworkError(f"{tag} names no LoRA")
    unknown = set(named) - {"te", "unet", "dyn"}
    if unknown:
        raise ExtraNetworkError(f"{tag}: unknown option {sorted(unknown)[0]!r} (te=, unet=, dyn=)")
    te = _weight(named.get("te", positional[0] if positional else "1"), tag)
    unet = _weight(named.get("unet", positional[1] if len(positional) > 1 else str(te)), tag)
    dyn = named.get("dyn", positional[2] if len(positional) > 2 else None)
    if dyn is not None and not (dyn.isdigit() and int(dyn) > 0):
        raise ExtraNetworkError(f"LoRA rank dyn {dyn!r} in {tag} is not a positive whole number")
    return NetworkSpec(items[0], te, unet, None if dyn is None else int(dyn))


def parse_prompt_networks(prompt: str) -> tuple[str, list[NetworkSpec]]:
    """(the prompt without its extra-network tags, the LoRA specs in order of appearance)."""
    specs: list[NetworkSpec] = []
    others: list[str] = []

    def take(match: re.Match) -> str:
        kind, args = match.group(1), match.group(2)
        if kind in NETWORK_TYPES:
            specs.append(_spec(args, match.group(0)))
        else:
            others.append(kind)
        return ""

    clean = _EXTRA_NETWORK.sub(take, prompt)
    if others:
        warnings.warn(f"extra networks of type {', '.join(sorted(set(others)))} are not supported; their tags "
                      f"were removed from the prompt", stacklevel=2)
    return clean, specs


def parse_lora_option(text: str) -> NetworkSpec:
    """The CLI's ``--lora PATH[:WEIGHT]`` (a NAME of the LoRA folder works too)."""
    path, sep, weight = text.rpartition(":")
    if not sep or not path or "/" in weight or "\\" in weight or weight == "":  # no weight, or a drive / path colon
        return NetworkSpec(text)
    value = _weight(weight, f"--lora {text}")
    return NetworkSpec(path, value, value)


def unet_aliases(unet: nn.Module) -> dict[str, str]:
    """LDM module paths (``input_blocks.1.1.proj_in``) -> ours, for LoRAs named after SGM/LDM modules."""
    from genpix.io.sd_checkpoint import key_map, unet_table

    config = getattr(unet, "config", None)
    try:
        with torch.device("meta"):
            meta = type(unet)(config)
        mapping = key_map(meta, unet_table(config))
    except (KeyError, TypeError, AttributeError):  # a U-Net without an LDM table
        return {}
    return {ldm.rpartition(".")[0]: ours.rpartition(".")[0] for ours, ldm in mapping.items()
            if ours.endswith(".weight")}


def truncated(parts: dict[str, torch.Tensor], dyn: int | None) -> dict[str, torch.Tensor]:
    """A LoRA layer's first ``dyn`` ranks, its scale kept at alpha / r of the whole layer (sd-webui's
    ``rebuild_conventional`` with ``dyn_dim``); other kinds, and None, unchanged."""
    down = parts.get("lora_down.weight")
    if dyn is None or down is None or "lora_mid.weight" in parts or dyn >= down.shape[0]:
        return parts
    scale = network_scale(parts, down.shape[0])
    return {**parts, "lora_down.weight": down[:dyn], "lora_up.weight": parts["lora_up.weight"][:, :dyn],
            "scale": torch.tensor(scale)}


def check_family(metadata: dict[str, str], xl: bool, name: str) -> None:
    """sd-scripts' ``ss_base_model_version`` (sdxl_base_v1-0, sd_v1, sd_v2...) against the model:
    an SDXL LoRA on SD 1.x/2.x (or the reverse) is refused even where some shapes happen to fit."""
    version = metadata.get("ss_base_model_version", "")
    if version and version.startswith("sdxl") != xl:
        model = "an SDXL model" if xl else "an SD 1.x/2.x model"
        raise ExtraNetworkError(f"LoRA {name!r} was trained for {version}, and this is {model}")


class NetworkLibrary:
    """A LoRA folder, its parsed files and the merged weights of the last set applied."""

    def __init__(self, lora_dir: str | Path | None = None) -> None:
        self.lora_dir = Path(lora_dir if lora_dir is not None else DEFAULT_LORA_DIR)
        self._files: dict[tuple, NetworkFile] = {}
        self._hashes: dict[tuple, str] = {}
        self._merged: tuple[tuple, dict] | None = None  # (key, merged weights) of the last set
        self._aliases: dict[int, dict[str, str]] = {}

    def available(self) -> dict[str, Path]:
        """Stem -> file of every LoRA in the folder (read afresh: sd-webui's refresh)."""
        return list_network_files(self.lora_dir)

    def find(self, name: str) -> Path:
        """The file a tag or ``--lora`` names: an existing path, a stem, or an alias; else one line
        listing the close names."""
        if Path(name).suffix and Path(name).is_file():
            return Path(name)
        files = self.available()
        if name in files:
            return files[name]
        for path in files.values():  # sd-webui's alias: the header's ss_output_name (no tensors read)
            try:
                if read_metadata(path).get("ss_output_name") == name:
                    return path
            except GenpixError:
                continue
        close = get_close_matches(name, list(files), n=4, cutoff=0.5)
        hint = f"; close names: {', '.join(close)}" if close else f"; {len(files)} LoRA files there"
        raise ExtraNetworkError(f"no LoRA named {name!r} in {self.lora_dir}{hint}")

    def read(self, path: Path) -> NetworkFile:
        """The parsed file, cached while its size and mtime stay the same."""
        stat = path.stat()
        key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
        if key not in self._files:
            if len(self._files) >= 16:
                self._files.clear()
            self._files[key] = read_network_file(path)
        return self._files[key]

    def hash(self, path: Path) -> str:
        stat = path.stat()
        key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
        if key not in self._hashes:
            self._hashes[key] = short_hash(path)
        return self._hashes[key]

    def infotext(self, specs: list[NetworkSpec]) -> dict[str, str | None]:
        """sd-webui's ``Lora hashes`` field for the applied specs (None without any)."""
        if not specs:
            return {"Lora hashes": None}
        names = [(Path(s.name).stem if Path(s.name).suffix else s.name, self.find(s.name)) for s in specs]
        return {"Lora hashes": '"' + ", ".join(f"{name}: {self.hash(path)}" for name, path in names) + '"'}

    def applied(self, unet: nn.Module | None, text_encoders: dict[str, nn.Module],
                specs: list[NetworkSpec]):
        """Context manager: the networks merged into ``unet`` and ``text_encoders`` (kohya prefix ->
        module) inside the block, the exact original weights after it. Without specs it only holds
        the model's lock, so that no other request's merged weights are in place meanwhile."""
        if unet is None and not text_encoders:
            return nullcontext()
        return self._applied(unet, text_encoders, specs)

    @contextmanager
    def _applied(self, unet: nn.Module | None, text_encoders: dict[str, nn.Module],
                 specs: list[NetworkSpec]) -> Iterator[None]:
        root = unet if unet is not None else next(iter(text_encoders.values()))
        with swap_lock(root):
            if not specs:
                yield
                return
            files = [(spec, self.find(spec.name)) for spec in specs]
            key = (id(root), tuple((s.te, s.unet, s.dyn, str(p), p.stat().st_mtime_ns) for s, p in files))
            if self._merged is None or self._merged[0] != key:
                buffers = self._merged[1] if self._merged is not None else None
                self._merged = None
                self._merged = (key, self._merge(unet, text_encoders, files, buffers))
            with swapped_weights(self._merged[1]):
                yield

    def _merge(self, unet: nn.Module | None, text_encoders: dict[str, nn.Module],
               files: list[tuple[NetworkSpec, Path]], buffers: dict | None = None) -> dict:
        aliases = self._aliases.setdefault(id(unet), unet_aliases(unet) if unet is not None else {})
        table = target_table(unet, text_encoders, aliases)
        changes = []
        xl = any(key.startswith("lora_te2_") for key in table)  # SDXL's second text encoder is there
        for spec, path in files:
            network = self.read(path)
            check_family(network.metadata, xl, spec.name)
            for key, target in check_changes(table, network.modules, spec.name):
                weight = spec.te if target.text_encoder else spec.unet
                changes.append((target, truncated(network.modules[key], spec.dyn), weight, f"{spec.name}: {key}"))
        with torch.no_grad():
            return merged_weights(changes, buffers)


@dataclass(frozen=True)
class Activation:
    """What a generation uses while its networks are applied: the prompts without their tags (to
    encode; the infotext keeps the user's text, as sd-webui's), the infotext fields, and the
    embeddings that fit every text encoder: name -> vector count, token width -> name -> vectors."""

    prompt: str
    negative_prompt: str
    notes: dict[str, str | None]
    counts: dict[str, int] = field(default_factory=dict)
    vectors: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)  # embedding name -> its file
    used: set[str] = field(default_factory=set)  # embeddings the prompts named (prompt_chunks adds them)


_ACTIVE: ContextVar[Activation | None] = ContextVar("genpix_extra_networks", default=None)


def active_networks() -> Activation | None:
    """The activation of the generation running in this thread / task (prompt_chunks reads its
    embeddings), or None."""
    return _ACTIVE.get()


def strip_tags(prompt: str) -> str:
    """The prompt without extra-network tags (what the text encoder sees)."""
    return _EXTRA_NETWORK.sub("", prompt)


@contextmanager
def activated(parts: object, request: object) -> Iterator[Activation | None]:
    """The pipeline hook: ``parts.networks`` (an ExtraNetworks, or None) applied for ``request``'s
    prompts to ``parts.modules`` inside the block, its embeddings and infotext fields readable through
    :func:`active_networks`; a no-op for pipelines without networks."""
    networks = getattr(parts, "networks", None)
    if networks is None:
        yield None
        return
    with networks.activate(request.prompt or "", request.negative_prompt or "", dict(parts.modules)) as activation:
        token = _ACTIVE.set(activation)
        try:
            yield activation
        finally:
            _ACTIVE.reset(token)


def network_notes() -> dict[str, str | None]:
    """The running generation's extra-network infotext fields ({} outside one)."""
    activation = _ACTIVE.get()
    if activation is None:
        return {}
    from genpix.io.embeddings import file_hash

    used = sorted(n for n in activation.used if n in activation.files)
    hashes = ", ".join(f"{n}: {file_hash(activation.files[n])}" for n in used)
    return {**activation.notes, "TI hashes": f'"{hashes}"' if used else None}  # sd-webui's TI hashes


def lora_prefixes(modules: dict[str, nn.Module]) -> dict[str, nn.Module]:
    """Kohya prefix -> text encoder of a pipeline's ``modules`` (role -> network): SD 1.x/2.x's
    "text_encoder" is ``lora_te_``; with a second one (SDXL) the first is ``lora_te1_`` (and
    ``lora_te_``) and the second ``lora_te2_``."""
    found = {}
    if "text_encoder" in modules:
        found["lora_te_"] = modules["text_encoder"]
        if "text_encoder_2" in modules:
            found["lora_te1_"] = modules["text_encoder"]
            found["lora_te2_"] = modules["text_encoder_2"]
    return found


def encoder_widths(modules: dict[str, nn.Module]) -> dict[str, int]:
    """Embedding part -> token width of a pipeline's text encoders: {"": D} for SD 1.x/2.x,
    {"clip_l": 768, "clip_g": 1280} for SDXL (the refiner: clip_g alone)."""
    encoders = {role: m for role, m in modules.items() if role.startswith("text_encoder") and m is not None}
    if set(encoders) == {"text_encoder"}:
        return {"": encoders["text_encoder"].config.hidden_size}
    names = {"text_encoder": "clip_l", "text_encoder_2": "clip_g"}
    return {names[role]: m.config.hidden_size for role, m in encoders.items() if role in names}


class ExtraNetworks:
    """A pipeline's LoRA folder and embeddings folder: the one entry point generation calls.

    ``with networks.activate(prompt, negative, dict(parts.modules)) as active:`` applies the prompts'
    ``<lora:...>`` tags to the U-Net and text encoder(s) for the block (exact restore after it),
    gives the prompts to encode (``active.prompt``) and the infotext fields (``active.notes``);
    :meth:`embedding_tables` gives a text encoder's textual-inversion vectors for
    prompt_chunks.chunk_prompt / encode_chunks. ``extra`` specs (the CLI's ``--lora``) join every
    request's."""

    def __init__(self, lora_dir: str | Path | None = None, embeddings_dir: str | Path | None = None,
                 extra: tuple[NetworkSpec | str, ...] = ()) -> None:
        from genpix.io.embeddings import EmbeddingFolder

        self.loras = NetworkLibrary(lora_dir)
        self.embeddings = EmbeddingFolder(embeddings_dir)
        self.extra = tuple(parse_lora_option(e) if isinstance(e, str) else e for e in extra)
        for spec in self.extra:  # an unknown --lora fails at loading, not at the first prompt
            self.loras.find(spec.name)

    @contextmanager
    def activate(self, prompt: str, negative_prompt: str, modules: dict[str, nn.Module]) -> Iterator[Activation]:
        clean, specs = parse_prompt_networks(prompt)
        clean_negative, negative_specs = parse_prompt_networks(negative_prompt)
        specs = [*self.extra, *specs, *negative_specs]  # sd-webui applies the negative prompt's tags too
        widths = encoder_widths(modules)
        self.check_embeddings(f"{clean}\n{clean_negative}", widths)
        tables = {width: self.embedding_tables(part, width)[1] for part, width in widths.items()}
        names = set.intersection(*(set(t) for t in tables.values())) if tables else set()
        counts = {n: len(next(iter(tables.values()))[n]) for n in names}
        vectors = {width: {n: t[n] for n in names} for width, t in tables.items()}
        with self.loras.applied(modules.get("unet"), lora_prefixes(modules), specs):
            files = {n: e.path for n, e in self.embeddings.all().items() if n in names and not isinstance(e, str)}
            yield Activation(clean, clean_negative, self.loras.infotext(specs), counts, vectors, files)

    def embedding_tables(self, part: str, width: int) -> tuple[dict[str, int], dict[str, torch.Tensor]]:
        """(name -> vector count, name -> (n, width) vectors) of the folder's embeddings for the text
        encoder ``part`` ("" for SD 1.x/2.x, "clip_l" / "clip_g" for SDXL) of token width ``width``."""
        vectors = {}
        for name, embedding in self.embeddings.all().items():
            rows = embedding.for_encoder(part, width) if not isinstance(embedding, str) else None
            if rows is not None:
                vectors[name] = rows
        return {n: len(v) for n, v in vectors.items()}, vectors

    def check_embeddings(self, text: str, widths: dict[str, int]) -> None:
        """A prompt word naming an embedding that does not fit this model is a one-line error (sd-webui
        skips such files silently and encodes the word as text)."""
        _, skipped = self.embeddings.for_model(widths)
        for name, embedding in skipped.items():
            if re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", text, re.IGNORECASE):
                if isinstance(embedding, str):
                    raise ExtraNetworkError(f"embedding {name!r}: {embedding}")
                have = ", ".join(f"{p or 'width'} {t.shape[1]}" for p, t in embedding.parts.items())
                want = ", ".join(f"{p or 'width'} {w}" for p, w in widths.items())
                raise ExtraNetworkError(f"embedding {name!r} ({have}) does not fit this model's text encoder "
                                        f"({want}): it was made for another model family")
