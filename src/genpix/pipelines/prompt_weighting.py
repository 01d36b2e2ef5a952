"""sd-webui's prompt emphasis syntax: ``(word:1.2)``, ``(word)``, ``[word]``, escapes and ``BREAK``.

A port of ``parse_prompt_attention`` (AUTOMATIC1111/stable-diffusion-webui, modules/prompt_parser.py):

- ``(text)`` multiplies the weight of ``text`` by 1.1, ``[text]`` divides it by 1.1, nesting
  multiplies (``((text))`` is 1.21); ``(text:w)`` multiplies it by ``w``;
- ``\\(``, ``\\)``, ``\\[``, ``\\]`` and ``\\\\`` are the literal characters;
- an unclosed bracket applies to the rest of the prompt; a stray closing one is plain text;
- ``BREAK`` (a word on its own) ends the current 75-token chunk (pipelines/prompt_chunks.py);
- neighbouring runs of equal weight are merged.

The weights are multiplied in sd-webui's order, so they are the same floats (1.5730000000000004 for
``(((house:1.3))``). genpix adds one check sd-webui lacks: a final weight outside
[-MAX_WEIGHT, MAX_WEIGHT] = [-10, 10] is an error (beyond it one token dominates its chunk's mean,
which prompt_chunks.py restores by rescaling every token of the chunk; typical weights are 0.5-1.5),
and a malformed number such as ``(a:1.2.3)``, on which sd-webui raises a ValueError, is a one-line
error too.
"""

from __future__ import annotations

import re

from genpix.errors import GenpixError

ROUND_MULTIPLIER = 1.1  # (text)
SQUARE_MULTIPLIER = 1 / 1.1  # [text]
MAX_WEIGHT = 10.0  # genpix's sane range: |weight| <= 10 (sd-webui sets no limit)
BREAK = "BREAK"  # the marker text of a chunk break; its weight is BREAK_WEIGHT
BREAK_WEIGHT = -1.0

# sd-webui's re_attention, alternative by alternative (escapes first, then brackets, the weight
# suffix ":w)", closers, plain text runs, a lone colon)
_ATTENTION = re.compile(r"""
\\\(|
\\\)|
\\\[|
\\]|
\\\\|
\\|
\(|
\[|
:\s*([+-]?[.\d]+)\s*\)|
\)|
]|
[^\\()\[\]:]+|
:
""", re.X)
_BREAK = re.compile(r"\s*\bBREAK\b\s*", re.S)


class PromptWeightError(GenpixError, ValueError):
    """A prompt's emphasis is malformed or outside the sane range."""


def parse_prompt_attention(text: str) -> list[tuple[str, float]]:
    """(text, weight) runs of a prompt, as sd-webui's parse_prompt_attention; a ``BREAK`` is the
    run ``("BREAK", -1.0)``. An empty prompt is ``[("", 1.0)]``.

    >>> parse_prompt_attention("an (important) word")
    [('an ', 1.0), ('important', 1.1), (' word', 1.0)]
    """
    res: list[list] = []
    round_brackets: list[int] = []
    square_brackets: list[int] = []

    def multiply_range(start: int, multiplier: float) -> None:
        for p in range(start, len(res)):
            res[p][1] *= multiplier

    for m in _ATTENTION.finditer(text):
        piece, weight = m.group(0), m.group(1)
        if piece.startswith("\\"):
            res.append([piece[1:], 1.0])
        elif piece == "(":
            round_brackets.append(len(res))
        elif piece == "[":
            square_brackets.append(len(res))
        elif weight is not None and round_brackets:
            multiply_range(round_brackets.pop(), _number(weight, text))
        elif piece == ")" and round_brackets:
            multiply_range(round_brackets.pop(), ROUND_MULTIPLIER)
        elif piece == "]" and square_brackets:
            multiply_range(square_brackets.pop(), SQUARE_MULTIPLIER)
        else:
            for i, part in enumerate(_BREAK.split(piece)):
                if i > 0:
                    res.append([BREAK, BREAK_WEIGHT])
                res.append([part, 1.0])
    for start in round_brackets:  # unclosed: to the end of the prompt
        multiply_range(start, ROUND_MULTIPLIER)
    for start in square_brackets:
        multiply_range(start, SQUARE_MULTIPLIER)
    if not res:
        res = [["", 1.0]]
    i = 0
    while i + 1 < len(res):  # merge runs of identical weights
        if res[i][1] == res[i + 1][1]:
            res[i][0] += res[i + 1][0]
            res.pop(i + 1)
        else:
            i += 1
    runs = [(str(t), float(w)) for t, w in res]
    check_weights(runs)
    return runs


def check_weights(runs: list[tuple[str, float]]) -> None:
    """Raise PromptWeightError for a run weighted outside [-MAX_WEIGHT, MAX_WEIGHT]."""
    for text, weight in runs:
        if (text, weight) != (BREAK, BREAK_WEIGHT) and not -MAX_WEIGHT <= weight <= MAX_WEIGHT:
            raise PromptWeightError(f"prompt weight {weight:g} of {text.strip()!r} is outside the sane range "
                                    f"[-{MAX_WEIGHT:g}, {MAX_WEIGHT:g}]")


def _number(weight: str, prompt: str) -> float:
    try:
        return float(weight)
    except ValueError:
        raise PromptWeightError(f"prompt weight {weight!r} is not a number (in {prompt!r})") from None
