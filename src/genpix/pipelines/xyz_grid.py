"""The X/Y/Z plot: sd-webui's axis types and value syntax (scripts/xyz_grid.py), the per-cell
request overrides they make, and the labelled grid of the cells' pictures.

Values are comma-separated (CSV, so "a, \"b, c\"" is two values), each stripped; numeric axes also
take sd-webui's ranges, expanded in place:

    1-5        -> 1, 2, 3, 4, 5           (int; float axes step by 1: 1.0, 2.0, ..., 5.0)
    1-5 (+2)   -> 1, 3, 5                 (step; 10-1 (-3) counts down)
    1-3 [3]    -> 1, 2, 3                 (count, evenly spaced: 0-1 [5] on a float axis -> 0, 0.25, ..)

Each axis value becomes a dict of sd-webui request fields for its cell (``seed``, ``steps``,
``cfg_scale``, ``sampler_name``, ``scheduler``, ``denoising_strength``, ``prompt`` and
``negative_prompt`` for Prompt S/R, ``override_settings`` for Checkpoint name and Clip skip);
a cell's overrides are its X, Y and Z dicts merged. :func:`plot` runs a cell generator over the
cells, costliest axis outermost (a checkpoint changes least often), and draws the grid.
"""

from __future__ import annotations

import csv
import io
import os
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from genpix.diffusion import samplers, schedules
from genpix.errors import GenpixError
from genpix.pipelines.xyz_drawing import draw_labelled_grid, join_grids

# sd-webui's range patterns, verbatim (their "." in the float ones matches any character)
RE_RANGE = re.compile(r"\s*([+-]?\s*\d+)\s*-\s*([+-]?\s*\d+)(?:\s*\(([+-]\d+)\s*\))?\s*")
RE_RANGE_FLOAT = re.compile(r"\s*([+-]?\s*\d+(?:.\d*)?)\s*-\s*([+-]?\s*\d+(?:.\d*)?)(?:\s*\(([+-]\d+(?:.\d*)?)\s*\))?\s*")
RE_RANGE_COUNT = re.compile(r"\s*([+-]?\s*\d+)\s*-\s*([+-]?\s*\d+)(?:\s*\[(\d+)\s*])?\s*")
RE_RANGE_COUNT_FLOAT = re.compile(r"\s*([+-]?\s*\d+(?:.\d*)?)\s*-\s*([+-]?\s*\d+(?:.\d*)?)(?:\s*\[(\d+(?:.\d*)?)\s*])?\s*")
MAX_CELLS = 1000


@dataclass(frozen=True)
class AxisType:
    """One of sd-webui's axis types: its label, value type, the request fields one value sets,
    how a value is shown in the legend, and the cost of changing it (sd-webui's ``cost``)."""

    label: str
    kind: type  # int, float or str
    field: str | None  # the request field set to the value (None: see overrides_for)
    cost: float = 0.0
    show_label: bool = True  # legend "Steps: 20" (True) or the bare value "Euler a" (False)


AXIS_TYPES: dict[str, AxisType] = {t.label.lower(): t for t in (
    AxisType("Nothing", str, None, show_label=False),
    AxisType("Seed", int, "seed"),
    AxisType("Var. seed", int, "subseed"),
    AxisType("Var. strength", float, "subseed_strength"),
    AxisType("Steps", int, "steps"),
    AxisType("CFG Scale", float, "cfg_scale"),
    AxisType("Prompt S/R", str, None, show_label=False),
    AxisType("Sampler", str, "sampler_name", show_label=False),
    AxisType("Checkpoint name", str, None, cost=1.0, show_label=False),
    AxisType("Schedule type", str, "scheduler"),
    AxisType("Eta", float, "eta"),
    AxisType("Clip skip", int, None),
    AxisType("Denoising", float, "denoising_strength"),
)}


@dataclass(frozen=True)
class Axis:
    """A parsed axis: its type, values, the overrides each value makes and its legend text."""

    type: AxisType
    values: tuple[Any, ...]
    overrides: tuple[dict[str, Any], ...]
    labels: tuple[str, ...]


NOTHING = Axis(AXIS_TYPES["nothing"], (0,), ({},), ("",))


def split_values(text: str) -> list[str]:
    """sd-webui's csv_string_to_list_strip: CSV fields of every line, each stripped."""
    return [value.strip() for row in csv.reader(io.StringIO(text)) for value in row]


def expand_ranges(values: Sequence[str], kind: type) -> list[Any]:
    """Numeric ranges expanded as sd-webui's process_axis does; other values kept as text."""
    out: list[Any] = []
    step_re, count_re = (RE_RANGE, RE_RANGE_COUNT) if kind is int else (RE_RANGE_FLOAT, RE_RANGE_COUNT_FLOAT)
    number = int if kind is int else float
    for value in values:
        m, mc = step_re.fullmatch(value), count_re.fullmatch(value)
        if m is not None:
            start, end = number(m.group(1).replace(" ", "")), number(m.group(2).replace(" ", ""))
            step = number(m.group(3)) if m.group(3) is not None else 1
            if step == 0:
                raise GenpixError(f"range {value!r} has a step of 0")
            out += list(range(start, end + 1, step)) if kind is int else np.arange(start, end + step, step).tolist()
        elif mc is not None:
            start, end = number(mc.group(1).replace(" ", "")), number(mc.group(2).replace(" ", ""))
            num = int(float(mc.group(3))) if mc.group(3) is not None else 1
            spaced = np.linspace(start=start, stop=end, num=num).tolist()
            out += [int(x) for x in spaced] if kind is int else spaced
        else:
            out.append(value)
    return out


def _convert(axis_type: AxisType, value: Any) -> Any:
    try:
        return axis_type.kind(value)
    except ValueError:
        what = "a whole number" if axis_type.kind is int else "a number"
        raise GenpixError(f"{axis_type.label} value {value!r} is not {what}") from None


def get_axis_type(label: str) -> AxisType:
    found = AXIS_TYPES.get(str(label).strip().lower())
    if found is None:
        names = ", ".join(t.label for t in AXIS_TYPES.values())
        raise GenpixError(f"unknown X/Y/Z axis type {label!r}; choose one of: {names}")
    return found


def _overrides(axis_type: AxisType, value: Any, first: Any, prompt: str, negative_prompt: str) -> dict[str, Any]:
    """The request fields one axis value sets."""
    label = axis_type.label
    if label == "Prompt S/R":  # every value replaces the first one (the search text) in both prompts
        return {"prompt": prompt.replace(first, value), "negative_prompt": negative_prompt.replace(first, value)}
    if label == "Checkpoint name":
        return {"override_settings": {"sd_model_checkpoint": value}}
    if label == "Clip skip":
        return {"override_settings": {"CLIP_stop_at_last_layers": value}}
    return {} if axis_type.field is None else {axis_type.field: value}


def _check(axis_type: AxisType, values: list[Any], prompt: str, negative_prompt: str,
           checkpoints: Sequence[str] | None) -> None:
    """sd-webui's confirm step: every value usable before the first cell runs."""
    label = axis_type.label
    if label == "Sampler":
        for value in values:
            samplers.resolve(value)
    elif label == "Schedule type":
        for value in values:
            schedules.schedule_key(value)
    elif label == "Prompt S/R" and values[0] not in prompt and values[0] not in negative_prompt:
        raise GenpixError(f"Prompt S/R did not find {values[0]!r} in the prompt or negative prompt")
    elif label == "Checkpoint name" and checkpoints is not None:
        unknown = [v for v in values if v not in checkpoints]
        if unknown:
            raise GenpixError(f"unknown checkpoint {unknown[0]!r}; choose one of: {', '.join(checkpoints)}")
    elif label in ("Steps", "Clip skip") and min(values) < 1:
        raise GenpixError(f"{label} values must be at least 1, got {min(values)}")


def legend(axis_type: AxisType, value: Any) -> str:
    """sd-webui's format_value_add_label / format_value / format_remove_path."""
    if isinstance(value, float):
        value = round(value, 8)
    if axis_type.label == "Nothing":
        return ""
    if axis_type.label == "Checkpoint name":
        return os.path.basename(str(value))
    return f"{axis_type.label}: {value}" if axis_type.show_label else str(value)


def parse_axis(label: str, text: str, *, prompt: str = "", negative_prompt: str = "",
               checkpoints: Sequence[str] | None = None, rng: random.Random | None = None) -> Axis:
    """An axis from its type label (any case) and values text, checked as sd-webui confirms them;
    a Seed or Var. seed of -1 (or empty) becomes a random seed, as sd-webui's fix_axis_seeds."""
    axis_type = get_axis_type(label)
    if axis_type.label == "Nothing":
        return NOTHING
    values = split_values(text)
    if axis_type.kind in (int, float):
        values = expand_ranges(values, axis_type.kind)
    if axis_type.label in ("Seed", "Var. seed"):
        rng = rng or random.Random()
        values = [rng.randrange(4294967294) if v in ("", "-1", -1) else v for v in values]
    values = [_convert(axis_type, v) for v in values]
    if not values:
        raise GenpixError(f"the {axis_type.label} axis has no values ({text!r})")
    _check(axis_type, values, prompt, negative_prompt, checkpoints)
    overrides = tuple(_overrides(axis_type, v, values[0], prompt, negative_prompt) for v in values)
    return Axis(axis_type, tuple(values), overrides, tuple(legend(axis_type, v) for v in values))


def merge_overrides(*parts: dict[str, Any]) -> dict[str, Any]:
    """Later dicts win; ``override_settings`` dicts are merged key by key."""
    merged: dict[str, Any] = {}
    for part in parts:
        for key, value in part.items():
            if key == "override_settings":
                merged[key] = {**merged.get(key, {}), **value}
            else:
                merged[key] = value
    return merged


@dataclass(frozen=True)
class Cell:
    """One picture of the plot: its place and the request fields it overrides."""

    ix: int
    iy: int
    iz: int
    overrides: dict[str, Any] = field(default_factory=dict)


def cells(x: Axis, y: Axis = NOTHING, z: Axis = NOTHING) -> list[Cell]:
    """Every cell, in the order to generate them: the costliest axis outermost (z, y, x when equal)."""
    count = len(x.values) * len(y.values) * len(z.values)
    if count > MAX_CELLS:
        raise GenpixError(f"the X/Y/Z plot would have {count} cells; at most {MAX_CELLS}")
    axes = {"x": x, "y": y, "z": z}
    order = sorted("zyx", key=lambda name: -axes[name].type.cost)  # stable: z, y, x among equal costs
    out = []
    for i in np.ndindex(*(len(axes[name].values) for name in order)):
        index = dict(zip(order, i))
        parts = (x.overrides[index["x"]], y.overrides[index["y"]], z.overrides[index["z"]])
        out.append(Cell(index["x"], index["y"], index["z"], merge_overrides(*parts)))
    return out


@dataclass
class XYZPlot:
    """The grid (Z grids side by side, each labelled), and the cells' pictures in cell order
    (index ix + iy len(X) + iz len(X) len(Y), as sd-webui returns them after the grid)."""

    grid: Image.Image
    images: list[Image.Image]
    cells: list[Cell]


def plot(generate: Callable[[dict[str, Any]], Image.Image], x: Axis, y: Axis = NOTHING, z: Axis = NOTHING, *,
         draw_legend: bool = True, margin: int = 0) -> XYZPlot:
    """Call ``generate(overrides)`` once per cell (costliest axis outermost) and draw the grid."""
    order = cells(x, y, z)
    nx, ny = len(x.values), len(y.values)
    pictures: list[Image.Image | None] = [None] * len(order)
    for cell in order:
        pictures[cell.ix + cell.iy * nx + cell.iz * nx * ny] = generate(cell.overrides)
    done = [p for p in pictures if p is not None]
    grids = []
    for iz in range(len(z.values)):
        block = done[iz * nx * ny:(iz + 1) * nx * ny]
        grids.append(draw_labelled_grid(block, nx, x.labels if draw_legend else None,
                                        y.labels if draw_legend else None, margin))
    grid = join_grids(grids, z.labels if draw_legend and len(z.values) > 1 else None)
    by_index = sorted(order, key=lambda c: c.ix + c.iy * nx + c.iz * nx * ny)
    return XYZPlot(grid, done, by_index)
