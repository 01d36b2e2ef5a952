"""Safety checks run after decoding, pluggable, as Stable Diffusion pipelines run theirs (diffusers'
``run_safety_checker``; sd-webui's NSFW filter): images a check flags are replaced by black ones,
the pipeline warns naming the checks that flagged them, and ``info["nsfw"]`` holds the flags.

A check is anything with the :class:`SafetyCheck` call: decoded images (B, C, H, W) in [0, 1] and
the prompt of each image -> (the images, flagged ones black; one flag per image). Two ship:

- :class:`ImageSafetyCheck`, the SD safety checker (models/safety_checker.py; CLIP image embeddings
  against concept embeddings), when a diffusers folder has its weights; it ignores the prompts;
- the prompt blocklist (pipelines/prompt_blocklist.py), always available, on by default.

:class:`CombinedCheck` runs several in turn, each on the previous one's images, flags OR-ed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch

from genpix.models.safety_checker import SafetyChecker


@runtime_checkable
class SafetyCheck(Protocol):
    """check(images (B, C, H, W) in [0, 1], prompts (B,)) -> (images, flags): flagged images black."""

    name: str  # how the pipeline's warning names the check

    def __call__(self, images: torch.Tensor, prompts: Sequence[str]) -> tuple[torch.Tensor, list[bool]]: ...


def black_out(images: torch.Tensor, flags: Sequence[bool]) -> torch.Tensor:
    """``images`` with those flagged replaced by black (zeros), as diffusers' safety checker does;
    the input is not changed."""
    if not any(flags):
        return images
    images = images.clone()
    images[torch.tensor(list(flags), dtype=torch.bool)] = 0
    return images


class ImageSafetyCheck:
    """The SD safety checker as a :class:`SafetyCheck`: its flags and black images, unchanged."""

    name = "safety checker"

    def __init__(self, checker: SafetyChecker) -> None:
        self.checker = checker

    def __call__(self, images: torch.Tensor, prompts: Sequence[str]) -> tuple[torch.Tensor, list[bool]]:
        return self.checker(images)


@dataclass(frozen=True)
class CheckResult:
    images: torch.Tensor  # (B, C, H, W), flagged ones black
    flags: list[bool]  # one per image: flagged by any check
    flagged_by: tuple[str, ...]  # the names of the checks that flagged at least one image


class CombinedCheck:
    """Several checks as one: run in turn (each sees the previous one's images), flags OR-ed."""

    name = "safety checks"

    def __init__(self, checks: Sequence[SafetyCheck] = ()) -> None:
        for check in checks:
            if not isinstance(check, SafetyCheck):
                raise TypeError(f"{check!r} is not a safety check (it needs a name and a call "
                                f"(images, prompts) -> (images, flags))")
        self.checks = tuple(checks)

    def run(self, images: torch.Tensor, prompts: Sequence[str]) -> CheckResult:
        if len(prompts) != len(images):
            raise ValueError(f"{len(images)} images but {len(prompts)} prompts")
        flags, flagged_by = [False] * len(images), []
        for check in self.checks:
            images, found = check(images, prompts)
            if any(found):
                flagged_by.append(check.name)
            flags = [a or bool(b) for a, b in zip(flags, found, strict=True)]
        return CheckResult(images, flags, tuple(flagged_by))

    def __call__(self, images: torch.Tensor, prompts: Sequence[str]) -> tuple[torch.Tensor, list[bool]]:
        result = self.run(images, prompts)
        return result.images, result.flags
