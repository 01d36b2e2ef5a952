"""Captions for labelled datasets: several phrasings of each class in several templates.

A text-to-image model trained on one fixed caption per class learns ten strings, not language. Giving
each image one of a few phrasings ("a sneaker", "a trainer", "a sports shoe") inside one of a few
templates ("a photo of {}") makes the model lean on what the text encoder says the words mean, so
prompts worded otherwise still land on the right class (measured in benchmarks/fashion_prompts.py).
The choice is a fixed function of the image's index, so every load gives every image the same caption.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from genpix.config import check

# Knuth's multiplicative hash (TAOCP 6.4): spreads consecutive indices over the 32-bit range.
_KNUTH = 2654435761


@dataclass(frozen=True)
class ClassCaptions:
    """The phrasings of every class and the templates they are put in.

    Attributes:
        phrases: for each label, the noun phrases that name it ("a sneaker", "a trainer").
        templates: format strings with one ``{}`` for the phrase ("a photo of {}").
    """

    phrases: tuple[tuple[str, ...], ...]
    templates: tuple[str, ...] = ("{}",)

    def __post_init__(self) -> None:
        check(all(len(p) > 0 for p in self.phrases), "every class needs at least one phrase")
        check(len(self.templates) > 0 and all(t.count("{}") == 1 for t in self.templates),
              "every template needs exactly one {}")

    def caption(self, label: int, index: int) -> str:
        """The caption of image ``index`` of class ``label``."""
        k = (index * _KNUTH) % 2**32
        phrases = self.phrases[label]
        return self.templates[(k // len(phrases)) % len(self.templates)].format(phrases[k % len(phrases)])

    def captions(self, labels: np.ndarray) -> tuple[str, ...]:
        return tuple(self.caption(int(y), i) for i, y in enumerate(labels.tolist()))

    def all_captions(self, label: int) -> list[str]:
        """Every caption class ``label`` can get."""
        return [t.format(p) for t in self.templates for p in self.phrases[label]]


FASHION_CAPTIONS = ClassCaptions(
    phrases=(
        ("a t-shirt", "a top", "a t-shirt or top", "a tee shirt"),
        ("a pair of trousers", "trousers", "pants"),
        ("a pullover", "a sweater", "a jumper"),
        ("a dress",),
        ("a coat", "a jacket"),
        ("a sandal", "sandals"),
        ("a shirt", "a button-up shirt"),
        ("a sneaker", "a trainer", "a sports shoe"),
        ("a bag", "a handbag"),
        ("an ankle boot", "a boot"),
    ),
    templates=("{}", "a photo of {}", "a picture of {}", "a grayscale photo of {}", "{} on a black background"),
)
