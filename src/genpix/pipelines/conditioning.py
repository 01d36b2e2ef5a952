"""Conditioners: the pipeline part that turns a prompt (or a class name) into the keyword arguments
the network takes, each with batch dimension 1.

- :class:`NullConditioner`: an unconditional model (nothing; the prompt must be empty);
- :class:`ClassConditioner`: a class name -> its label (K, the null class, for ""), through a
  function to the network's arguments ({"class_labels": y} for a pixel U-Net, {"context": tau(y)}
  for latent diffusion);
- :class:`CLIPConditioner`: Stable Diffusion's CLIP text encoder with sd-webui's prompt syntax
  (pipelines/prompt_chunks.py), {"context": (1, 77 k, D)};
- :class:`LearnedTextConditioner`: genpix's latent diffusion text encoders tau_theta (learned
  byte-level transformer, frozen MiniLM), {"context": (1, L, D)}.

``encode_pair(prompt, negative, clip_skip)`` gives the condition and the classifier-free guidance
branch (Ho and Salimans 2022), of equal shapes so they run as one batch, and notes for the infotext.
A second text encoder and pooled embeddings (SDXL) are another conditioner returning more keys.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import torch

from genpix.errors import GenpixError
from genpix.models.text import CLIPTextModel
from genpix.models.tokenizer import CLIPTokenizer
from genpix.pipelines.colour_hint import hinted_prompt
from genpix.pipelines.prompt_chunks import chunk_prompt, encode_chunks

Cond = dict[str, torch.Tensor]


class Conditioner(Protocol):
    def encode(self, text: str, clip_skip: int = 1) -> Cond: ...

    def encode_pair(self, prompt: str, negative: str, clip_skip: int = 1) -> tuple[Cond, Cond, dict[str, Any]]: ...


class _Pairing:
    """encode_pair from encode: the two encoded one after the other, no notes."""

    def encode_pair(self, prompt: str, negative: str, clip_skip: int = 1) -> tuple[Cond, Cond, dict[str, Any]]:
        return self.encode(prompt, clip_skip), self.encode(negative, clip_skip), {}


class NullConditioner(_Pairing):
    """An unconditional network: no arguments."""

    def encode(self, text: str, clip_skip: int = 1) -> Cond:
        if text:
            raise GenpixError("this model is unconditional; it takes no prompt")
        return {}


class ClassConditioner(_Pairing):
    """Class names (case-insensitive) -> labels (1,), "" -> the null class K = len(class_names);
    ``to_cond`` maps the labels to the network's arguments."""

    def __init__(self, class_names: tuple[str, ...], to_cond: Callable[[torch.Tensor], Cond],
                 device: torch.device | str = "cpu") -> None:
        self.class_names, self.to_cond, self.device = tuple(class_names), to_cond, torch.device(device)

    def label(self, text: str) -> int:
        folded = [c.casefold() for c in self.class_names]
        key = text.strip().casefold()
        if key and key not in folded:
            raise GenpixError(f"unknown class {text!r}; this model knows: {', '.join(self.class_names)}")
        return folded.index(key) if key else len(folded)

    def encode(self, text: str, clip_skip: int = 1) -> Cond:
        return self.to_cond(torch.tensor([self.label(text)], device=self.device))


class CLIPConditioner:
    """Stable Diffusion 1.x/2.x: per-token embeddings (1, 77 k, D) as sd-webui encodes a prompt
    (pipelines/prompt_chunks.py): emphasis ``(word:1.2)``, ``[word]``, ``BREAK``, 75-token chunks
    encoded one by one; the text encoder's last layer (clip_skip 1) or the one ``clip_skip - 1``
    before it, through the final LayerNorm."""

    def __init__(self, tokenizer: CLIPTokenizer, text_model: CLIPTextModel, dtype: torch.dtype = torch.float32) -> None:
        self.tokenizer, self.text_model, self.dtype = tokenizer, text_model, dtype

    @property
    def layers(self) -> int:
        return self.text_model.config.num_hidden_layers

    def encode(self, text: str, clip_skip: int = 1) -> Cond:
        if not 1 <= clip_skip <= self.layers:
            raise GenpixError(f"clip_skip must be between 1 and {self.layers} (sd-webui's Clip skip), got {clip_skip}")
        chunks = chunk_prompt(self.tokenizer, text, length=self.text_model.config.max_position_embeddings)
        return {"context": encode_chunks(self.text_model, chunks, clip_skip=clip_skip - 1).float()}

    def encode_pair(self, prompt: str, negative: str, clip_skip: int = 1) -> tuple[Cond, Cond, dict[str, Any]]:
        """Both of the same length: the one with fewer 77-token chunks padded with the empty prompt's
        chunk (sd-webui's "Pad prompt/negative prompt" option, infotext "Pad conds"), so that both go
        through the U-Net in one batch."""
        cond, uncond = self.encode(prompt, clip_skip)["context"], self.encode(negative, clip_skip)["context"]
        if cond.shape[1] == uncond.shape[1]:
            return {"context": cond}, {"context": uncond}, {}
        empty = self.encode("", clip_skip)["context"]  # (1, 77, D): each chunk is encoded on its own
        length = max(cond.shape[1], uncond.shape[1])

        def padded(z: torch.Tensor) -> torch.Tensor:
            return torch.cat([z, *[empty] * ((length - z.shape[1]) // empty.shape[1])], dim=1)

        return {"context": padded(cond)}, {"context": padded(uncond)}, {"Pad conds": True}


class LearnedTextConditioner:
    """genpix latent diffusion's tau_theta (models/ldm.py Conditioner) on one prompt: (1, L, D) (L + 1 with
    the colour token). With ``colour_hint`` and a colour head, the prompt (not the negative prompt) gets
    the colour hint (pipelines/colour_hint.py), noted in the infotext as "Colour hint"."""

    def __init__(self, tau, device: torch.device | str = "cpu", colour_hint: bool = True) -> None:
        self.tau, self.device, self.colour_hint = tau, torch.device(device), colour_hint

    def encode(self, text: str, clip_skip: int = 1) -> Cond:
        return {"context": self.tau(self.tau.inputs([text], device=self.device))}

    def encode_pair(self, prompt: str, negative: str, clip_skip: int = 1) -> tuple[Cond, Cond, dict[str, Any]]:
        y = self.tau.inputs([prompt], device=self.device)
        hinted, colour = hinted_prompt(self.tau, prompt, y) if self.colour_hint else (prompt, None)
        if colour is not None:
            y = self.tau.inputs([hinted], device=self.device)
        return {"context": self.tau(y)}, self.encode(negative, clip_skip), {"Colour hint": colour}
