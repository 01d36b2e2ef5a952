"""SDXL's conditioner: one prompt -> the U-Net's ``context``, ``text_embeds`` and ``time_ids``.

Podell et al. 2023 ("SDXL: Improving Latent Diffusion Models for High-Resolution Image Synthesis"):

- sec. 2.1: the cross-attention context is the penultimate layer of two text encoders, CLIP
  ViT-L/14 (768) and OpenCLIP ViT-bigG/14 (1280), taken without the final LayerNorm and
  concatenated along the channels: (1, 77 k, 2048). The refiner has only bigG: (1, 77 k, 1280).
  The pooled bigG vector (last layer, final LayerNorm, at the eos token, through ``text_projection``)
  is ``text_embeds`` (1, 1280);
- sec. 2.2: micro-conditioning on the original image size (h, w), the crop's top-left corner
  (top, left) and the target size (h, w): ``time_ids`` (1, 6); the refiner takes (h, w, top, left,
  aesthetic score) (1, 5) instead (SGM configs/inference/sd_xl_refiner.yaml). The U-Net embeds each
  id in 256 sinusoids (models/sd_unet.py ``added_embedding_input``).

Prompts are read as sd-webui reads them (modules/sd_hijack_clip.py with sd_models_xl.py): emphasis,
``BREAK`` and 75-token chunks on each encoder (pipelines/prompt_chunks.py), each chunk encoded on
its own; the second encoder pads with "!" (id 0) after the eos, as open_clip's tokenizer does (its
tokenizer is given with ``pad_token="!"``). ``text_embeds`` comes from the first chunk, before
emphasis (sd-webui: ``zs[0].pooled``).

Defaults are sd-webui's (``get_learned_conditioning`` in modules/sd_models_xl.py): original and
target size = the image's (height, width), crop (0, 0) (``opts.sdxl_crop_top/left``), aesthetic
score 6.0 for the prompt and 2.5 for the negative prompt (``opts.sdxl_refiner_high/low_aesthetic_score``).

**The empty negative prompt.** sd-webui zeroes the text conditioning of a negative prompt that is
empty (``force_zero_embeddings=['txt']`` for SGM's conditioner): ``context`` and ``text_embeds`` are
zeros, ``time_ids`` are kept (the negative aesthetic score for the refiner). genpix does the same
(``zero_empty_negative=True``). diffusers' StableDiffusionXLPipeline zeroes them only when
``negative_prompt`` is None and the folder's ``force_zeros_for_empty_prompt`` is true (the base's
model_index.json; the refiner's says false); an explicit ``""`` is encoded there. A non-empty
negative prompt is encoded like the prompt in all three.

**clip_skip.** 1 (the default) is SDXL's penultimate layer on both encoders; k > 1 goes k - 1 layers
further down on both (diffusers' ``clip_skip = k - 1``: ``hidden_states[-(k + 1)]``). sd-webui
ignores Clip skip for SDXL unless ``sdxl_clip_l_skip`` is set.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch

from genpix.errors import GenpixError
from genpix.models.text import CLIPTextModel, CLIPTextModelWithProjection
from genpix.models.tokenizer import CLIPTokenizer
from genpix.pipelines.prompt_chunks import (PromptChunk, chunk_prompt, embedding_fixes, emphasize, empty_chunk,
                                            encode_chunks)

Cond = dict[str, torch.Tensor]


@dataclass(frozen=True)
class MicroConditioning:
    """SDXL's size and crop conditioning (Podell et al. 2023, sec. 2.2) and the refiner's aesthetic score."""

    original_size: tuple[int, int] | None = None  # (height, width); None: the image's size (sd-webui)
    crop_top_left: tuple[int, int] = (0, 0)  # (top, left); sd-webui opts.sdxl_crop_top / sdxl_crop_left
    target_size: tuple[int, int] | None = None  # (height, width); None: the image's size
    aesthetic_score: float = 6.0  # refiner, prompt (opts.sdxl_refiner_high_aesthetic_score)
    negative_aesthetic_score: float = 2.5  # refiner, negative prompt (opts.sdxl_refiner_low_aesthetic_score)

    def time_ids(self, height: int, width: int, *, refiner: bool, negative: bool) -> torch.Tensor:
        """(1, 6): original (h, w), crop (top, left), target (h, w); the refiner's (1, 5): original,
        crop, aesthetic score (SGM's embedder order, diffusers' ``_get_add_time_ids``)."""
        original = self.original_size or (height, width)
        if refiner:
            score = self.negative_aesthetic_score if negative else self.aesthetic_score
            ids = [*original, *self.crop_top_left, score]
        else:
            ids = [*original, *self.crop_top_left, *(self.target_size or (height, width))]
        return torch.tensor([ids], dtype=torch.float32)


class SDXLConditioner:
    """Prompt -> {"context", "text_embeds", "time_ids"}, each with batch 1 (module docstring).

    ``tokenizer``/``text_model``: CLIP ViT-L (None for the refiner); ``tokenizer_2``/``text_model_2``:
    OpenCLIP bigG with its projection. ``refiner`` selects the aesthetic-score time ids (the
    refiner's U-Net takes 5 ids, the base's 6). ``size`` (height, width) is the image's, set per
    request with :meth:`with_size`.
    """

    def __init__(self, tokenizer: CLIPTokenizer | None, text_model: CLIPTextModel | None,
                 tokenizer_2: CLIPTokenizer, text_model_2: CLIPTextModelWithProjection, *,
                 refiner: bool = False, micro: MicroConditioning = MicroConditioning(),
                 size: tuple[int, int] = (1024, 1024), zero_empty_negative: bool = True) -> None:
        if (tokenizer is None) != (text_model is None):
            raise GenpixError("SDXL conditioner: give the first tokenizer and text model together (or neither)")
        if tokenizer_2.pad_id != 0:
            raise GenpixError("SDXL conditioner: the second tokenizer must pad with '!' (id 0), as open_clip's")
        self.tokenizer, self.text_model = tokenizer, text_model
        self.tokenizer_2, self.text_model_2 = tokenizer_2, text_model_2
        self.refiner, self.micro, self.size = refiner, micro, size
        self.zero_empty_negative = zero_empty_negative

    def with_size(self, width: int, height: int, micro: MicroConditioning | None = None) -> SDXLConditioner:
        """This conditioner for an image of ``width`` x ``height`` (and other micro-conditioning)."""
        other = copy.copy(self)
        other.size = (height, width)
        other.micro = micro or self.micro
        return other

    def layers(self) -> int:
        models = [m for m in (self.text_model, self.text_model_2) if m is not None]
        return min(m.config.num_hidden_layers for m in models) - 1

    @torch.no_grad()
    def encode(self, text: str, clip_skip: int = 1, *, negative: bool = False) -> Cond:
        """The U-Net's keyword arguments for ``text``; ``negative`` picks the negative aesthetic
        score and zeroes an empty text (``zero_empty_negative``)."""
        if not 1 <= clip_skip <= self.layers():
            raise GenpixError(f"clip_skip must be between 1 and {self.layers()} for SDXL, got {clip_skip}")
        time_ids = self.micro.time_ids(*self.size, refiner=self.refiner, negative=negative)
        chunks_2 = chunk_prompt(self.tokenizer_2, text, length=self.text_model_2.config.max_position_embeddings)
        chunks = [] if self.tokenizer is None else chunk_prompt(
            self.tokenizer, text, length=self.text_model.config.max_position_embeddings)
        # "!" is a pad token for bigG only, so "!!" can read as fewer tokens there: the encoder with
        # fewer chunks gets empty ones (sd-webui would fail to concatenate)
        count = max(len(chunks), len(chunks_2))
        chunks_2 += [empty_chunk(self.tokenizer_2, len(chunks_2[0].ids))] * (count - len(chunks_2))
        tokens_2, pooled = self._encode_big(chunks_2, clip_skip)
        parts = [tokens_2]
        if self.text_model is not None:
            chunks += [empty_chunk(self.tokenizer, len(chunks[0].ids))] * (count - len(chunks))
            parts.insert(0, encode_chunks(self.text_model, chunks, clip_skip=clip_skip, final_norm=False))
        cond = {"context": torch.cat(parts, dim=-1).float(), "text_embeds": pooled.float(), "time_ids": time_ids}
        if negative and text == "" and self.zero_empty_negative:  # sd-webui's force_zero_embeddings=['txt']
            cond.update(context=torch.zeros_like(cond["context"]), text_embeds=torch.zeros_like(cond["text_embeds"]))
        return {k: v.to(self._device()) for k, v in cond.items()}

    def _encode_big(self, chunks: list[PromptChunk], clip_skip: int) -> tuple[torch.Tensor, torch.Tensor]:
        """bigG's weighted penultimate states (1, 77 k, 1280) and the first chunk's pooled vector (1, P)."""
        model = self.text_model_2
        device = self._device()
        parts, pooled = [], None
        for chunk in chunks:
            ids = torch.tensor([chunk.ids], device=device)
            with embedding_fixes(model, ids, chunk.fixes):  # textual inversion (prompt_chunks.py)
                out = model(ids, clip_skip=clip_skip, final_norm=False)
            pooled = out.pooled if pooled is None else pooled
            parts.append(emphasize(out.tokens, chunk.weights))
        return torch.cat(parts, dim=1), pooled

    def _device(self) -> torch.device:
        return self.text_model_2.text_model.embeddings.token_embedding.weight.device

    def encode_pair(self, prompt: str, negative: str, clip_skip: int = 1) -> tuple[Cond, Cond, dict[str, Any]]:
        """The prompt's and the negative prompt's conditioning, of equal lengths so that they run as
        one batch: the shorter context padded with the empty prompt's chunk (sd-webui's "Pad conds")."""
        cond, uncond = self.encode(prompt, clip_skip), self.encode(negative, clip_skip, negative=True)
        if cond["context"].shape[1] == uncond["context"].shape[1]:
            return cond, uncond, {}
        empty = self.encode("", clip_skip)["context"]  # (1, 77, D)
        length = max(cond["context"].shape[1], uncond["context"].shape[1])
        for c in (cond, uncond):
            c["context"] = torch.cat([c["context"], *[empty] * ((length - c["context"].shape[1]) // empty.shape[1])],
                                     dim=1)
        return cond, uncond, {"Pad conds": True}
