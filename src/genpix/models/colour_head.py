"""The colour token: the basic colour a caption asks for, read from the text encoder's token states by
a small learned head, and added to the U-Net's context as one more token.

A frozen sentence encoder carries a colour name's colour only weakly (MiniLM puts "rose" near "red",
"navy" near "black": benchmarks/colour_word_probe.py), and a U-Net conditioned on its token states
through cross-attention alone learns the names it was shown about half the time. The head is a direct
path: attention pooling over the token states (a learned score per token, softmax over the sequence,
as in Lin et al. 2017, "A structured self-attentive sentence embedding") and a two-layer MLP give
logits over Berlin and Kay's eleven basic colour terms (data/colour_names.py). It is trained with a
cross-entropy on the basic colour the reader finds in each training picture (training/ldm.py), not by
the diffusion loss: its probabilities p enter the U-Net detached, as the token E p + b (E: one learned
context vector per colour), appended after the caption's tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from genpix.config import check

COLOUR_CLASSES = 11  # data/colour_names.py BASIC_COLOURS
HIDE_ATTENTION = 0.05  # colour-word dropout hides the tokens with at least this much of the head's attention


@dataclass(frozen=True)
class ColourHeadConfig:
    dim: int  # D of the token states it reads (and of the token it writes)
    hidden: int = 256  # MLP width
    score_hidden: int = 128  # width of the attention-pooling scorer
    dropout: float = 0.1
    classes: int = COLOUR_CLASSES

    def __post_init__(self) -> None:
        check(min(self.dim, self.hidden, self.score_hidden, self.classes) >= 1,
              "the colour head's sizes must be >= 1")
        check(0 <= self.dropout < 1, f"the colour head's dropout must be in [0, 1), got {self.dropout}")


class ColourHead(nn.Module):
    """Token states (B, L, D) -> basic-colour logits (B, K), and the colour token (B, 1, D)."""

    def __init__(self, config: ColourHeadConfig) -> None:
        super().__init__()
        self.config = config
        self.norm = nn.LayerNorm(config.dim)
        self.score = nn.Sequential(nn.Linear(config.dim, config.score_hidden), nn.Tanh(),
                                   nn.Linear(config.score_hidden, 1))
        self.classifier = nn.Sequential(nn.Dropout(config.dropout), nn.Linear(config.dim, config.hidden), nn.GELU(),
                                        nn.Dropout(config.dropout), nn.Linear(config.hidden, config.classes))
        self.embedding = nn.Linear(config.classes, config.dim)  # E p + b

    def attention(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(h, a): h = LayerNorm(tokens) (B, L, D) and a = softmax_i(w2 tanh(W1 h_i)) (B, L, 1)."""
        h = self.norm(tokens)
        return h, self.score(h).softmax(dim=1)

    def logits(self, tokens: torch.Tensor) -> torch.Tensor:
        """logits = MLP(sum_i a_i h_i) (B, K)."""
        return self._classify(*self.attention(tokens))

    def _classify(self, h: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        return self.classifier((a * h).sum(dim=1))

    def token(self, logits: torch.Tensor) -> torch.Tensor:
        """The context token E p + b (B, 1, D) of p = softmax(logits), detached from the head."""
        return self.embedding(logits.detach().softmax(dim=-1))[:, None]

    def forward(self, tokens: torch.Tensor, hide: torch.Tensor | None = None) -> torch.Tensor:
        """The context with the colour token appended: (B, L + 1, D); for the rows where ``hide`` (B,)
        bool, the tokens the head attends to (a >= HIDE_ATTENTION) are zeroed (colour-word dropout)."""
        h, a = self.attention(tokens)
        logits = self._classify(h, a)
        if hide is not None:
            tokens = tokens.masked_fill(hide[:, None, None] & (a.detach() >= HIDE_ATTENTION), 0.0)
        return torch.cat([tokens, self.token(logits).to(tokens.dtype)], dim=1)
