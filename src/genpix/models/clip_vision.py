"""CLIP's image tower (Radford et al. 2021, "Learning Transferable Visual Models From Natural
Language Supervision"; the ViT of Dosovitskiy et al. 2021), as the SD safety checker uses it.

The image is cut into patch_size x patch_size patches, each linearly embedded (a strided conv
without bias); a learned class token is prepended and position embeddings added; then a LayerNorm
("pre_layrnorm", transformers' spelling), the pre-LN transformer layers of models/text.py without
the causal mask, and the pooled output: the class token's final state through "post_layernorm".
Parameter names are those under transformers' ``CLIPVisionModel.vision_model`` (``embeddings.*``,
``pre_layrnorm.*``, ``encoder.layers.*``, ``post_layernorm.*``).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Literal

import torch
from torch import nn

from genpix.config import check, from_dict
from genpix.errors import GenpixError
from genpix.models.text import CLIPEncoder, CLIPTextConfig, Embedding


@dataclass(frozen=True)
class CLIPVisionConfig:
    hidden_size: int = 1024  # ViT-L/14, the safety checker's tower
    intermediate_size: int = 4096
    num_hidden_layers: int = 24
    num_attention_heads: int = 16
    image_size: int = 224
    patch_size: int = 14
    num_channels: int = 3
    hidden_act: Literal["quick_gelu", "gelu"] = "quick_gelu"
    layer_norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        check(self.patch_size >= 1 and self.image_size % self.patch_size == 0,
              f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
        self.layer_config()  # validates the transformer sizes

    @property
    def num_positions(self) -> int:
        return (self.image_size // self.patch_size) ** 2 + 1  # the patches and the class token

    def layer_config(self) -> CLIPTextConfig:
        """The sizes of the transformer layers, which are CLIP's text layers (models/text.py)."""
        return CLIPTextConfig(hidden_size=self.hidden_size, intermediate_size=self.intermediate_size,
                              num_hidden_layers=self.num_hidden_layers, num_attention_heads=self.num_attention_heads,
                              max_position_embeddings=self.num_positions, hidden_act=self.hidden_act,
                              layer_norm_eps=self.layer_norm_eps)

    @classmethod
    def from_transformers(cls, data: dict) -> CLIPVisionConfig:
        """From a transformers ``vision_config`` (other keys ignored)."""
        known = {f.name for f in fields(cls)}
        return from_dict(cls, {k: v for k, v in data.items() if k in known}, where="CLIP vision config")


class CLIPVisionEmbeddings(nn.Module):
    def __init__(self, config: CLIPVisionConfig) -> None:
        super().__init__()
        self.class_embedding = nn.Parameter(torch.zeros(config.hidden_size))
        self.patch_embedding = nn.Conv2d(config.num_channels, config.hidden_size, kernel_size=config.patch_size,
                                         stride=config.patch_size, bias=False)
        self.position_embedding = Embedding(config.num_positions, config.hidden_size)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, C, S, S) -> (B, 1 + (S / patch)^2, D)."""
        patches = self.patch_embedding(pixel_values.to(self.patch_embedding.weight.dtype))
        patches = patches.flatten(2).transpose(1, 2)  # (B, N, D)
        cls = self.class_embedding.expand(len(patches), 1, -1)
        return torch.cat([cls, patches], dim=1) + self.position_embedding.weight[None]


class CLIPVisionTransformer(nn.Module):
    def __init__(self, config: CLIPVisionConfig) -> None:
        super().__init__()
        self.config = config
        self.embeddings = CLIPVisionEmbeddings(config)
        self.pre_layrnorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.encoder = CLIPEncoder(config.layer_config())
        self.post_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """pixel_values (B, C, image_size, image_size), CLIP-normalised -> pooled (B, D)."""
        size = self.config.image_size
        if pixel_values.ndim != 4 or tuple(pixel_values.shape[1:]) != (self.config.num_channels, size, size):
            raise GenpixError(f"CLIP vision input must be (B, {self.config.num_channels}, {size}, {size}), "
                             f"got {tuple(pixel_values.shape)}")
        x = self.pre_layrnorm(self.embeddings(pixel_values))
        t = x.shape[1]
        full = torch.ones(1, 1, t, t, dtype=torch.bool, device=x.device)  # every patch sees every patch
        for layer in self.encoder.layers:
            x = layer(x, full)
        return self.post_layernorm(x[:, 0])
