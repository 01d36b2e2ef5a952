"""Command-line flags derived from a frozen config dataclass: one ``--field-name`` per field, its type,
choices and shown default read from the field's annotation and default, never written again by hand.

    Literal["a", "b"]  -> choices a, b          int   -> a whole number     float -> a finite number
    bool               -> --name / --no-name    str   -> text               tuple[int, ...] -> 1,2,3
    X | None           -> as X (leaving the flag out keeps None)

An absent flag parses to None, so a caller can tell "given" from "left out" (``--resume`` compares the
given ones with the run's config; a ``--config`` file fills the rest) and the dataclass's own default
applies. A nested dataclass or any other annotation has no flag form: list the field as hidden.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args, get_origin

from genpix.arguments import finite_float, int_tuple, whole_number
from genpix.errors import GenpixError


def show(value: Any) -> str:
    """A default as the user would type it: 32,64 for a tuple, 0.001 for a float."""
    if isinstance(value, (tuple, list)):
        return ",".join(map(show, value))
    if isinstance(value, bool):
        return "on" if value else "off"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _unwrap_optional(kind: Any) -> Any:
    if get_origin(kind) in (typing.Union, types.UnionType):
        options = [k for k in get_args(kind) if k is not type(None)]
        if len(options) == 1:
            return options[0]
    return kind


def argparse_options(kind: Any) -> dict[str, Any]:
    """``add_argument`` keywords for a field annotated ``kind`` (see the module docstring)."""
    kind = _unwrap_optional(kind)
    if get_origin(kind) is Literal:
        choices = get_args(kind)
        return {"choices": choices, "type": type(choices[0])}
    if get_origin(kind) is tuple and get_args(kind)[:1] == (int,):
        return {"type": int_tuple, "metavar": "N,N,..."}
    parsers = {bool: {"action": argparse.BooleanOptionalAction}, int: {"type": whole_number},
               float: {"type": finite_float}, str: {"type": str}}
    if kind in parsers:
        return dict(parsers[kind])
    raise GenpixError(f"a config field of type {kind!r} has no command-line form; list it as hidden")


@dataclass(frozen=True)
class Flag:
    """One option ``--name-with-dashes`` stored as ``name``; ``parse`` overrides the type's parser."""

    name: str
    kind: Any  # a field annotation (int, Literal[...], tuple[int, ...] | None, ...)
    help: str = ""
    default: Any = None  # shown in the help only: an absent flag parses to None
    parse: Callable[[str], Any] | None = None
    metavar: str | None = None

    @property
    def option(self) -> str:
        return "--" + self.name.replace("_", "-")

    def add_to(self, parser: argparse.ArgumentParser) -> None:
        options = argparse_options(self.kind)
        if self.parse is not None:
            options["type"] = self.parse
        if self.metavar is not None:
            options["metavar"] = self.metavar
        shown = "" if self.default is None else f" (default {show(self.default)})"
        parser.add_argument(self.option, dest=self.name, default=None,
                            help=(self.help + shown).strip().replace("%", "%%") or None, **options)


def config_flags(config_cls: type, help: Mapping[str, str | Callable[[], str]] | None = None, *,
                 skip: Iterable[str] = (), defaults: Mapping[str, Any] | None = None) -> list[Flag]:
    """The flags of every field of ``config_cls`` but ``skip``, in field order. ``help`` describes a
    field (a callable is called now, for text that costs something to compute); ``defaults`` replace the
    dataclass's own in the help (a family's learning rate)."""
    hints = typing.get_type_hints(config_cls)
    help, defaults, skipped = help or {}, defaults or {}, set(skip)
    unknown = (set(help) | set(defaults)) - {f.name for f in dataclasses.fields(config_cls)}
    if unknown:
        raise GenpixError(f"{config_cls.__name__} has no field {sorted(unknown)[0]!r}")
    flags = []
    for f in dataclasses.fields(config_cls):
        if f.name in skipped:
            continue
        text = help.get(f.name, "")
        own_default = f.default if f.default is not dataclasses.MISSING else None
        flags.append(Flag(f.name, hints[f.name], text() if callable(text) else text,
                          defaults.get(f.name, own_default)))
    return flags


def given(values: Mapping[str, Any], flags: Iterable[Flag]) -> dict[str, Any]:
    """The flags the user gave (not None) among ``values`` (``vars(args)``), by field name."""
    return {f.name: values[f.name] for f in flags if values.get(f.name) is not None}
