"""Prompt styles in sd-webui's ``styles.csv`` format (modules/styles.py), read, written and applied.

The file is CSV (UTF-8, a BOM allowed) with a header row ``name,prompt,negative_prompt``; sd-webui's
older ``name,text`` header is read too. Rows whose name starts with ``#`` are comments. A style
prompt containing ``{prompt}`` wraps the user's prompt (the placeholder is replaced by it); one
without is appended after a comma, blank parts dropped (sd-webui ``merge_prompts``):

    "masterpiece, {prompt}, 8k" + "a cat"  ->  "masterpiece, a cat, 8k"
    "oil painting"              + "a cat"  ->  "a cat, oil painting"

Styles apply in the order given, each to the result of the previous one; the negative prompt takes
the styles' negative prompts the same way. Where sd-webui silently reads a row with an unquoted
comma as extra columns, or skips a file it cannot read, genpix names the file and line.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from genpix.errors import GenpixError
from genpix.io.atomic import write_text_atomic

FIELDS = ("name", "prompt", "negative_prompt")
PLACEHOLDER = "{prompt}"


@dataclass(frozen=True)
class PromptStyle:
    """One row of styles.csv."""

    name: str
    prompt: str = ""
    negative_prompt: str = ""


def merge_prompts(style_prompt: str, prompt: str) -> str:
    """sd-webui's merge: the placeholder replaced by ``prompt``, else "prompt, style" without blanks."""
    if PLACEHOLDER in style_prompt:
        return style_prompt.replace(PLACEHOLDER, prompt)
    return ", ".join(part for part in (prompt.strip(), style_prompt.strip()) if part)


def apply_style_prompts(prompt: str, style_prompts: Iterable[str]) -> str:
    """``prompt`` with each style prompt merged in, in order (sd-webui apply_styles_to_prompt)."""
    for style_prompt in style_prompts:
        prompt = merge_prompts(style_prompt, prompt)
    return prompt


def parse_styles(text: str, where: str = "styles.csv") -> dict[str, PromptStyle]:
    """The styles of a styles.csv text by name (a later row of the same name wins, as in sd-webui)."""
    reader = csv.reader(io.StringIO(text.removeprefix("\ufeff"), newline=""), skipinitialspace=True)
    try:
        header = next(reader, None)
        if header is None:
            return {}
        columns = [h.strip() for h in header]
        prompt_column = "prompt" if "prompt" in columns else "text" if "text" in columns else None
        if "name" not in columns or prompt_column is None:
            raise GenpixError(f"{where}: the header must name the columns name, prompt and negative_prompt "
                              f"(found {', '.join(columns) or 'none'})")
        styles = {}
        for row in reader:
            if not row or not any(cell.strip() for cell in row):
                continue
            line = reader.line_num
            if len(row) > len(columns):
                raise GenpixError(f"{where} line {line}: {len(row)} fields where the header has {len(columns)} "
                                  f"(put prompts that contain commas in double quotes)")
            values = dict(zip(columns, row))
            name = values.get("name", "")
            if name.startswith("#"):
                continue
            if not name.strip():
                raise GenpixError(f"{where} line {line}: a style without a name")
            styles[name] = PromptStyle(name, values.get(prompt_column, ""), values.get("negative_prompt", ""))
    except csv.Error as error:
        raise GenpixError(f"{where} line {reader.line_num}: not valid CSV ({error})") from None
    return styles


def read_styles(path: str | Path) -> dict[str, PromptStyle]:
    """A styles.csv file by name; a missing file has no styles (as in sd-webui)."""
    path = Path(path)
    if not path.exists():
        return {}
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise GenpixError(f"{path}: cannot read the styles file ({error})") from None
    return parse_styles(text, str(path))


def format_styles(styles: Iterable[PromptStyle]) -> str:
    """styles.csv text: the header, then one row per style (quoted where needed, CRLF as csv writes)."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(FIELDS)
    for style in styles:
        writer.writerow((style.name, style.prompt, style.negative_prompt))
    return out.getvalue()


def write_styles(path: str | Path, styles: Iterable[PromptStyle]) -> Path:
    """Write styles.csv atomically (UTF-8 with a BOM, as sd-webui writes it)."""
    return write_text_atomic(path, "\ufeff" + format_styles(styles))


def lookup(styles: dict[str, PromptStyle], names: Sequence[str]) -> list[PromptStyle]:
    """The named styles in order; an unknown name is an error listing the known ones (sd-webui
    would apply an empty style instead)."""
    unknown = [n for n in names if n not in styles]
    if unknown:
        known = ", ".join(styles) or "none: no styles file or an empty one"
        raise GenpixError(f"unknown style {unknown[0]!r}; the styles are: {known}")
    return [styles[n] for n in names]


def apply_styles(prompt: str, negative_prompt: str, names: Sequence[str],
                 styles: dict[str, PromptStyle]) -> tuple[str, str]:
    """(prompt, negative prompt) with the named styles applied in order, as sd-webui's processing
    does (apply_styles_to_prompt and apply_negative_styles_to_prompt)."""
    chosen = lookup(styles, names)
    return (apply_style_prompts(prompt, (s.prompt for s in chosen)),
            apply_style_prompts(negative_prompt, (s.negative_prompt for s in chosen)))


def extract_style_text(style_text: str, prompt: str) -> tuple[bool, str]:
    """sd-webui's extract_style_text_from_prompt: (True, the prompt without the style's text) when
    the style could have produced it, else (False, prompt)."""
    stripped_prompt, stripped_style = prompt.strip(), style_text.strip()
    if PLACEHOLDER in stripped_style:
        left, right = stripped_style.split(PLACEHOLDER, 2)[:2]
        if stripped_prompt.startswith(left) and stripped_prompt.endswith(right):
            return True, stripped_prompt[len(left):len(stripped_prompt) - len(right)]
    elif stripped_prompt.endswith(stripped_style):
        stripped_prompt = stripped_prompt[:len(stripped_prompt) - len(stripped_style)]
        return True, stripped_prompt[:-2] if stripped_prompt.endswith(", ") else stripped_prompt
    return False, prompt


def extract_styles(prompt: str, negative_prompt: str,
                   styles: dict[str, PromptStyle]) -> tuple[list[str], str, str]:
    """(style names, prompt, negative prompt) with the styles found at the prompts' ends taken out,
    in the order they were applied (sd-webui StyleDatabase.extract_styles_from_prompt)."""
    extracted, candidates = [], list(styles.values())
    while True:
        for style in candidates:
            if not style.prompt and not style.negative_prompt:
                continue
            found, new_prompt = extract_style_text(style.prompt, prompt)
            if not found:
                continue
            found, new_negative = extract_style_text(style.negative_prompt, negative_prompt)
            if found:
                prompt, negative_prompt = new_prompt, new_negative
                candidates.remove(style)
                extracted.append(style.name)
                break
        else:
            return list(reversed(extracted)), prompt, negative_prompt
