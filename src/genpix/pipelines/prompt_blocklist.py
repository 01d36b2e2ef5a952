"""The prompt blocklist: a safety check (pipelines/safety.py) that flags the images of a prompt
naming explicit content, always available (the SD safety checker needs its weights).

1. the prompt, NFKC-normalised, is read as sd-webui reads it (pipelines/prompt_weighting.py):
   the emphasis brackets and weights ``(word:1.3)``, ``((word))``, ``[word]`` and ``BREAK`` dropped;
   the runs are joined both with and without a space between them (so ``nu(de)`` is seen as
   "nude"), and the raw prompt is searched too; underscores count as spaces (booru-style tags);
2. each term matches case-insensitively (``str.casefold``) on word boundaries: not inside a longer
   word ("sex" does not match "Essex"); the words of a several-word term may be split by any spaces;
3. the terms are :data:`DEFAULT_TERMS` plus those of the user's files (one a line, ``#`` comments),
   from ``--blocklist FILE`` and $GENPIX_BLOCKLIST.

Only the prompt is checked, never the negative prompt (which names what to avoid).
"""

from __future__ import annotations

import os
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from genpix.errors import GenpixError
from genpix.pipelines.prompt_weighting import BREAK, BREAK_WEIGHT, PromptWeightError, parse_prompt_attention
from genpix.pipelines.safety import SafetyCheck, black_out

BLOCKLIST_ENV = "GENPIX_BLOCKLIST"  # a file of extra terms, for every pipeline this process loads
# explicit sexual content, in the words prompts use for it; extend with a file rather than here
DEFAULT_TERMS = ("nsfw", "nude", "nudes", "nudity", "naked", "topless", "porn", "porno",
                 "pornography", "pornographic", "hentai", "xxx", "sex", "sexual", "intercourse", "erotic",
                 "genitals", "genitalia", "penis", "vagina", "nipple", "nipples", "areola", "blowjob",
                 "masturbation", "masturbating", "orgasm", "cumshot", "bdsm")
SYNTAX = frozenset("()[]:\\")  # characters of sd-webui's emphasis syntax, which no term can match


class BlocklistError(GenpixError, ValueError):
    """A blocklist file cannot be read or holds a term that cannot match."""


def read_terms(path: str | Path) -> tuple[str, ...]:
    """The terms of a blocklist file: UTF-8, one term a line, ``#`` starts a comment, blank lines skipped."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except IsADirectoryError:
        raise BlocklistError(f"blocklist {path} is a folder, not a file of terms") from None
    except FileNotFoundError:
        raise BlocklistError(f"blocklist {path}: no such file") from None
    except OSError as error:
        raise BlocklistError(f"blocklist {path} cannot be read: {error.strerror or error}") from None
    except UnicodeDecodeError as error:
        raise BlocklistError(f"blocklist {path} is not UTF-8 text (byte {error.start})") from None
    terms = []
    for number, line in enumerate(text.splitlines(), 1):
        term = " ".join(line.split("#", 1)[0].split())
        if not term:
            continue
        if SYNTAX & set(term) or "\0" in term:
            raise BlocklistError(f"blocklist {path} line {number}: {term!r} holds prompt syntax "
                                 f"({' '.join(sorted(SYNTAX))}) or a NUL; write the plain words")
        terms.append(term)
    return tuple(terms)


@dataclass(frozen=True)
class BlocklistConfig:
    terms: tuple[str, ...] = DEFAULT_TERMS  # matched case-insensitively on word boundaries
    extra_terms: tuple[str, ...] = ()  # the user's, from files (read_terms)

    @classmethod
    def from_files(cls, path: str | Path | None = None, environ: Mapping[str, str] | None = None) -> BlocklistConfig:
        """The default terms plus those of ``path`` (``--blocklist``) and of the file named by
        $GENPIX_BLOCKLIST in ``environ`` (both, when both are given)."""
        paths = [p for p in ((environ or {}).get(BLOCKLIST_ENV) or None, path) if p is not None]
        return cls(extra_terms=tuple(term for p in paths for term in read_terms(p)))


def searchable_texts(prompt: str) -> set[str]:
    """The forms of ``prompt`` the terms are searched in (step 1 above), case-folded."""
    text = unicodedata.normalize("NFKC", prompt)
    try:
        runs = [t for t, w in parse_prompt_attention(text) if (t, w) != (BREAK, BREAK_WEIGHT)]
    except PromptWeightError:  # a weight out of range: the pipeline refuses it; still look at the words
        runs = []
    forms = {text, "".join(runs), " ".join(runs)}
    return {form.replace("_", " ").casefold() for form in forms}


class PromptBlocklist:
    """blocklist(images, prompts) -> (images, flags): the images of a prompt holding a term, black."""

    name = "prompt blocklist"

    def __init__(self, config: BlocklistConfig | None = None) -> None:
        self.config = config or BlocklistConfig()
        terms = sorted({" ".join(t.casefold().split()) for t in (*self.config.terms, *self.config.extra_terms)} - {""})
        words = [r"\s+".join(re.escape(word) for word in term.split()) for term in terms]
        # (?<!\w) and (?!\w): word boundaries that also hold for terms that begin or end with punctuation
        self.pattern = re.compile(r"(?<!\w)(?:" + "|".join(words) + r")(?!\w)") if words else None

    def matches(self, prompt: str) -> int:
        """How many blocked terms ``prompt`` holds (counted in the form holding the most)."""
        if self.pattern is None:
            return 0
        return max(len(self.pattern.findall(text)) for text in searchable_texts(prompt))

    def __call__(self, images: torch.Tensor, prompts: Sequence[str]) -> tuple[torch.Tensor, list[bool]]:
        flags = [self.matches(prompt or "") > 0 for prompt in prompts]
        return black_out(images, flags), flags


def default_checks(enabled: bool = True, blocklist: str | Path | None = None,
                   environ: Mapping[str, str] | None = None) -> tuple[SafetyCheck, ...]:
    """The checks every loaded text-to-image pipeline runs: none when not ``enabled``, else the
    prompt blocklist with its default terms plus those of the files ``blocklist`` and
    $GENPIX_BLOCKLIST (read from ``environ``, default ``os.environ``). A diffusers folder's loader
    adds its safety checker as an :class:`ImageSafetyCheck`."""
    if not enabled:
        if blocklist is not None:
            raise GenpixError("a blocklist file has no effect with the safety checks turned off "
                              "(--no-safety-checker); give one or the other")
        return ()
    return (PromptBlocklist(BlocklistConfig.from_files(blocklist, os.environ if environ is None else environ)),)
