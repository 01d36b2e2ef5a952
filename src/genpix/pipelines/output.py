"""What every pipeline returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image


@dataclass
class PipelineOutput:
    images: list[Image.Image]  # one PIL image per sample
    tensors: torch.Tensor  # the same images, float (B, C, H, W) in [0, 1], on the CPU
    infotexts: list[str]  # sd-webui generation parameters, one per image
    info: dict[str, Any] = field(default_factory=dict)  # the call's parameters, seeds included
