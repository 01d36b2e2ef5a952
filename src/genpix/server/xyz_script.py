"""sd-webui's "X/Y/Z plot" script through the API: ``script_name: "x/y/z plot"`` with its ``script_args``.

The axis types are sd-webui's txt2img dropdown indices (scripts/xyz_grid.py of sd-webui 1.10, the
AxisOption and AxisOptionTxt2Img entries in order); genpix runs those pipelines/xyz_grid.py implements and
refuses the others by name. ``script_args`` (sd-webui's ``run`` signature):

    0-8   x_type, x_values, x_values_dropdown, y_type, y_values, y_values_dropdown, z_type, z_values, z_values_dropdown
    9-12  draw_legend, include_lone_images, include_sub_grids, no_fixed_seeds
    13-17 vary_seeds_x, vary_seeds_y, vary_seeds_z, margin_size, csv_mode

A type may also be given by its label ("Steps"). Values are the text, or the dropdown list when the text
is empty. As sd-webui: a seed of -1 is drawn once for every cell (unless no_fixed_seeds), each cell is one
image; the answer's images are the grid, then (include_lone_images) the cells in index order
ix + iy * len(X) + iz * len(X) * len(Y). Sub grids (include_sub_grids with a Z axis) are not made.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from typing import Any

from genpix.errors import GenpixError
from genpix.pipelines.xyz_grid import AXIS_TYPES, Axis, cells, merge_overrides, parse_axis
from genpix.server.errors import ApiError

XYZ = "x/y/z plot"
TXT2IMG_AXES = (  # sd-webui 1.10's txt2img axis options, by dropdown index
    "Nothing", "Seed", "Var. seed", "Var. strength", "Steps", "Hires steps", "CFG Scale", "Prompt S/R",
    "Prompt order", "Sampler", "Hires sampler", "Checkpoint name", "Negative Guidance minimum sigma",
    "Sigma Churn", "Sigma min", "Sigma max", "Sigma noise", "Schedule type", "Schedule min sigma",
    "Schedule max sigma", "Schedule rho", "Beta schedule alpha", "Beta schedule beta", "Eta", "Clip skip",
    "Denoising", "Initial noise multiplier", "Extra noise", "Hires upscaler")
MIN_CELL_SIDE = 128  # small cells are enlarged (nearest) before the legend is drawn


@dataclass(frozen=True)
class XYZScript:
    x: Axis
    y: Axis
    z: Axis
    draw_legend: bool = True
    include_lone_images: bool = False
    margin: int = 0

    def cells(self):
        return cells(self.x, self.y, self.z)


def _label(value: Any, index: int) -> str:
    if isinstance(value, str) and not value.strip().isdigit():
        label = value.strip()
    elif isinstance(value, (int, str)) and not isinstance(value, bool) and 0 <= int(value) < len(TXT2IMG_AXES):
        label = TXT2IMG_AXES[int(value)]
    else:
        raise ApiError(f"script_args[{index}] must be an X/Y/Z axis type index 0-{len(TXT2IMG_AXES) - 1} "
                       f"or label, got {value!r}", 422)
    if label.lower() not in AXIS_TYPES:
        names = ", ".join(t.label for t in AXIS_TYPES.values())
        raise ApiError(f"X/Y/Z axis type {label!r} is not implemented by genpix; the axis types: {names}", 422)
    return label


def _values(text: Any, dropdown: Any) -> str:
    if isinstance(text, str) and text.strip():
        return text
    if isinstance(dropdown, list) and dropdown:
        out = io.StringIO()
        csv.writer(out).writerow([str(v) for v in dropdown])
        return out.getvalue().strip()
    return "" if text is None else str(text)


def _flag(args: list, index: int, default: bool) -> bool:
    return bool(args[index]) if len(args) > index and args[index] is not None else default


def parse_xyz(request, check_model) -> XYZScript:
    """The plot of a txt2img request whose script_name is "x/y/z plot" (a 422 for bad arguments);
    ``check_model(name)`` refuses an unknown checkpoint name."""
    args = list(request.script_args or [])
    args += [None] * (9 - len(args))
    axes = []
    for i, axis in enumerate("xyz"):
        type_arg = args[3 * i] if args[3 * i] is not None else (1 if axis == "x" else 0)
        label = _label(type_arg, 3 * i)
        try:
            axes.append(parse_axis(label, _values(args[3 * i + 1], args[3 * i + 2]), prompt=request.prompt,
                                   negative_prompt=request.negative_prompt))
        except GenpixError as error:
            raise ApiError(f"X/Y/Z plot, {axis.upper()} axis: {error}", 422) from None
        if label == "Checkpoint name":
            for value in axes[-1].values:
                check_model(value)
    margin = args[16] if len(args) > 16 else args[13] if len(args) == 14 else 0  # 1.10's place, else 1.5's
    if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not 0 <= margin <= 500:
        raise ApiError(f"X/Y/Z plot margin_size must be 0-500 pixels, got {margin!r}", 422)
    return XYZScript(*axes, _flag(args, 9, True), _flag(args, 10, False), int(margin))


def cell_request(request, overrides: dict[str, Any]):
    """One cell's request: the axis overrides over the plot's request, one image, no script."""
    merged = merge_overrides({"override_settings": dict(request.override_settings or {})}, overrides)
    return request.model_copy(update={**merged, "batch_size": 1, "n_iter": 1, "script_name": None,
                                      "script_args": None})


def enlarged(picture):
    """A small cell enlarged by a whole factor (nearest) so the legend fits beside it."""
    factor = -(-MIN_CELL_SIDE // min(picture.size))
    return picture if factor <= 1 else picture.resize((picture.width * factor, picture.height * factor), 0)
