"""Colour names beyond the eleven basic terms: the 949 names of the XKCD colour survey (Munroe 2010,
public domain), each with its RGB and the basic term it falls under (data/colour_names.py).

A model that sees only basic colour words learns "crimson" only as far as its text encoder puts
"crimson" near "red" (for the frozen MiniLM, about half the time: benchmarks/colour_word_probe.py).
Tinting pictures to a named colour and captioning them with its name teaches the names themselves.
One name in HELD_OUT_EVERY, chosen by a hash of the name, is kept out of every training caption, so
that what a model does with names it never saw can be measured (benchmarks/emoji_prompts.py).
"""

from __future__ import annotations

import functools
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .colour_names import BASIC_COLOURS, pixel_colour_names, rgb_to_hsv

LEXICON_FILE = Path(__file__).with_name("xkcd_colours.txt")
HELD_OUT_EVERY = 10


@dataclass(frozen=True)
class ColourName:
    name: str  # "dusty rose"
    rgb: tuple[int, int, int]
    basic: str  # the basic colour term of its RGB
    held_out: bool  # kept out of training captions

    @property
    def hsv(self) -> tuple[float, float, float]:
        hue, saturation, value = rgb_to_hsv(np.array(self.rgb, dtype=np.float64) / 255.0).tolist()
        return hue, saturation, value


def is_held_out(name: str) -> bool:
    """Whether the colour name ``name`` is kept out of training (CRC-32 of the name, one in HELD_OUT_EVERY)."""
    return zlib.crc32(name.encode()) % HELD_OUT_EVERY == 0


@functools.cache
def colour_lexicon(path: Path = LEXICON_FILE) -> tuple[ColourName, ...]:
    """Every name of the lexicon file (``name<TAB>#rrggbb`` lines, # comments), in file order."""
    rows = [line.split("\t") for line in path.read_text(encoding="utf-8").splitlines()
            if line and not line.startswith("#")]
    rgbs = np.array([[int(code[i:i + 2], 16) for i in (1, 3, 5)] for _, code in rows])
    basics = pixel_colour_names(rgbs)
    return tuple(ColourName(name, tuple(rgb), BASIC_COLOURS[basic], is_held_out(name))
                 for (name, _), rgb, basic in zip(rows, rgbs.tolist(), basics.tolist()))


def training_names() -> tuple[ColourName, ...]:
    """The lexicon without its held-out names."""
    return tuple(c for c in colour_lexicon() if not c.held_out)
