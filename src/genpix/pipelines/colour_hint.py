"""The colour hint: for a latent diffusion model with a colour head (models/colour_head.py), a prompt
that names a colour is encoded once more with the basic colour the head reads in it appended, as the
training captions write it ("a violet disc" -> "a violet disc, purple").

The head reads the asked basic colour from free wording far more often than the U-Net follows the
words or the colour token alone (docs/benchmarks.md); a basic colour word is what the U-Net follows
best. A prompt that names no colour is left as it is: the head always picks some colour, and for "a
frog" it would only narrow the pictures. Whether a prompt names a colour is decided by a word list,
the basic terms and the 949 names of the XKCD colour survey (data/colour_lexicon.py), its held-out
names included: the list says only that a colour is named; which colour is the head's reading, and
the head was never trained on the held-out names.
"""

from __future__ import annotations

import functools
import re

import torch

from genpix.data.colour_lexicon import colour_lexicon
from genpix.data.colour_names import BASIC_COLOURS


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z]+", text.casefold())  # "snow-white" -> snow, white; "robin's egg" -> robin, s, egg


@functools.cache
def colour_words() -> frozenset[str]:
    """The colour names that make a prompt hinted, as runs of words: the basic terms and the survey's names."""
    return frozenset(" ".join(_words(name)) for name in (*BASIC_COLOURS, "gray", *(c.name for c in colour_lexicon())))


@functools.cache
def _longest_name() -> int:
    return max(len(name.split()) for name in colour_words())


def names_a_colour(prompt: str) -> bool:
    """Whether ``prompt`` holds one of :func:`colour_words` as a whole run of words."""
    words, names, longest = _words(prompt), colour_words(), _longest_name()
    return any(" ".join(words[i:j]) in names
               for i in range(len(words)) for j in range(i + 1, min(i + longest, len(words)) + 1))


def hinted_prompt(tau, prompt: str, y: torch.Tensor) -> tuple[str, str | None]:
    """(the prompt to encode, the hinted colour or None): ``tau`` a models/ldm.py Conditioner, ``y``
    its inputs for ``prompt`` (1, ...)."""
    if getattr(tau, "colour", None) is None or not names_a_colour(prompt):
        return prompt, None
    with torch.no_grad():
        colour = BASIC_COLOURS[int(tau.colour_logits(y).argmax())]
    return f"{prompt}, {colour}", colour
