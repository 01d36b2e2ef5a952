"""Prompts must be text: a string holding lone surrogates is refused with one line.

Python hands over bytes that are not UTF-8 as lone surrogates (PEP 383's ``surrogateescape``:
``b"\\xff"`` in a command-line argument becomes ``"\\udcff"``; a JSON ``"\\udcff"`` escape decodes to
the same). Encoded for a text model they fail deep inside it or are silently replaced, and the PNG
infotext cannot hold them; so every text-to-image pipeline checks its prompts first.
"""

from __future__ import annotations

from genpix.errors import GenpixError


class PromptTextError(GenpixError, ValueError):
    """A prompt that is not valid Unicode text (undecodable bytes)."""


def check_prompt_text(text: str, what: str = "prompt") -> str:
    """``text`` unchanged, or a PromptTextError naming ``what`` and where the bad bytes start."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise PromptTextError(f"the {what} is not valid UTF-8 text: undecodable bytes at character "
                              f"{error.start + 1}") from None
    return text
