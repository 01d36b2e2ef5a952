"""Walks between two latent points: linear (lerp) and spherical (slerp) interpolation."""

from __future__ import annotations

from typing import Literal

import torch

from genpix.pipelines.latent_decoder import slerp

Mode = Literal["lerp", "slerp"]
MODES: tuple[Mode, ...] = ("lerp", "slerp")


def interpolate(z0: torch.Tensor, z1: torch.Tensor, frames: int, mode: Mode = "slerp") -> torch.Tensor:
    """``frames`` points from z0 to z1 inclusive, stacked: (frames, *z0.shape)."""
    if frames < 2:
        raise ValueError(f"frames must be at least 2, got {frames}")
    ts = torch.linspace(0, 1, frames).tolist()
    if mode == "lerp":
        return torch.stack([torch.lerp(z0, z1, t) for t in ts])
    return torch.stack([slerp(t, z0, z1) for t in ts])
