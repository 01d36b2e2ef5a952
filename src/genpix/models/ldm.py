"""The trainable part of latent diffusion: eps_theta(z_t, t, tau_theta(y)) (Rombach et al. 2022,
eq. 3), the cross-attention U-Net and the conditioning encoder tau_theta trained jointly.

tau_theta by ``cond``:

- ``text``, ``learned``: the small CLIP-layout transformer over UTF-8 bytes (models/text.py);
  its input y is token ids (B, L) from :meth:`Conditioner.inputs`.
- ``text``, ``minilm``: the frozen all-MiniLM-L6-v2; :meth:`Conditioner.inputs` runs it (no
  gradient) and tau_theta is the identity on its token embeddings (B, L, 384). The frozen encoder is
  held outside the module tree, so it is neither trained, averaged, nor saved with the weights.
- ``class``: an embedding table (K + 1, D) (the last row the null class for guidance), one
  context token per image, as LDM's class-conditional ImageNet model (``ClassEmbedder``).
- ``none``: a single zero context token (B, 1, D); the U-Net's cross-attention sees nothing.

With ``colour`` (text only), tau_theta ends in the colour head (models/colour_head.py): the basic
colour it reads from the token states joins the context as one more token (B, L + 1, D).
"""

from __future__ import annotations

import torch
from torch import nn

from genpix.models.colour_head import ColourHead, ColourHeadConfig
from genpix.models.sd_unet import SDUNet, SDUNetConfig
from genpix.models.text import SentenceEncoder, SmallTextEncoder, SmallTextEncoderConfig


class Conditioner(nn.Module):
    """tau_theta: condition inputs y -> context (B, L, D) for the U-Net's cross-attention."""

    def __init__(self, cond: str, dim: int, *, text_encoder: str = "learned",
                 text: SmallTextEncoderConfig | None = None, num_classes: int = 0,
                 colour: ColourHeadConfig | None = None) -> None:
        super().__init__()
        self.cond, self.text_encoder, self.dim, self.num_classes = cond, text_encoder, dim, num_classes
        self.frozen: tuple[SentenceEncoder, ...] = ()  # minilm: outside the module tree (not saved)
        if cond == "text" and text_encoder == "learned":
            self.text = SmallTextEncoder(text or SmallTextEncoderConfig(width=dim))
        elif cond == "text":
            self.frozen = (SentenceEncoder(),)
        elif cond == "class":
            self.embedding = nn.Embedding(num_classes + 1, dim)
        self.colour = ColourHead(colour) if colour is not None and cond == "text" else None

    def inputs(self, prompts: list[str] | None = None, labels: torch.Tensor | None = None,
               device: torch.device | str = "cpu", *, warn: bool = True) -> torch.Tensor:
        """What :meth:`forward` takes for a batch: token ids (B, L) int64 (learned text), frozen
        token embeddings (B, L, 384) (minilm), labels (B,) int64 (class; K = the null class), or
        zeros (B,) (none; B = len(prompts) or len(labels)). ``warn``: about truncated prompts."""
        if self.cond == "text":
            if self.frozen:
                encoder = self.frozen[0].to(device)
                return encoder(list(prompts)).tokens.to(device)
            return self.text.tokenizer(list(prompts), warn=warn).to(device)
        if self.cond == "class":
            return labels.to(device)
        return torch.zeros(len(prompts) if prompts is not None else len(labels), device=device)

    def null_inputs(self, n: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """The unconditional inputs for ``n`` images: the empty caption, or the null class."""
        if self.cond == "class":
            return torch.full((n,), self.num_classes, dtype=torch.long, device=device)
        return self.inputs([""] * n, device=device)

    def text_tokens(self, y: torch.Tensor) -> torch.Tensor:
        """The caption's token states (B, L, D): the frozen encoder's (y itself) or the learned one's."""
        return y if self.frozen else self.text.transformer(y).tokens

    def colour_logits(self, y: torch.Tensor) -> torch.Tensor:
        """The colour head's basic-colour logits (B, K) for text inputs y (a model with the head)."""
        return self.colour.logits(self.text_tokens(y))

    def forward(self, y: torch.Tensor, hide_colour: torch.Tensor | None = None) -> torch.Tensor:
        """Context (B, L, D); with the colour head (B, L + 1, D), the colour words hidden from the
        U-Net in the rows where ``hide_colour`` (B,) bool (colour-word dropout, training)."""
        if self.cond == "text":
            tokens = self.text_tokens(y)  # (B, L, D)
            return tokens if self.colour is None else self.colour(tokens, hide_colour)
        if self.cond == "class":
            return self.embedding(y)[:, None]  # (B, 1, D)
        return y.new_zeros(y.shape[0], 1, self.dim)  # (B, 1, D)


class LatentDiffusionModel(nn.Module):
    """eps_theta(z_t (B, C, h, w), t (B,), y) -> (B, C, h, w): the U-Net on tau_theta(y)."""

    def __init__(self, unet_config: SDUNetConfig, conditioner: Conditioner) -> None:
        super().__init__()
        self.unet = SDUNet(unet_config)
        self.conditioner = conditioner

    def forward(self, z_t: torch.Tensor, t: torch.Tensor, y: torch.Tensor,
                hide_colour: torch.Tensor | None = None) -> torch.Tensor:
        return self.unet(z_t, t, self.conditioner(y, hide_colour))
