"""X/Y/Z plot: value parsing against sd-webui's process_axis (scripts/xyz_grid.py, written here
from its source), per-cell overrides, cell order and the labelled grid."""

import csv
import random
import re
from io import StringIO

import numpy as np
import pytest
from PIL import Image

from genpix.errors import GenpixError
from genpix.pipelines.xyz_grid import cells, parse_axis, plot

# --- sd-webui scripts/xyz_grid.py ----------------------------------------------------------------
re_range = re.compile(r"\s*([+-]?\s*\d+)\s*-\s*([+-]?\s*\d+)(?:\s*\(([+-]\d+)\s*\))?\s*")
re_range_float = re.compile(r"\s*([+-]?\s*\d+(?:.\d*)?)\s*-\s*([+-]?\s*\d+(?:.\d*)?)(?:\s*\(([+-]\d+(?:.\d*)?)\s*\))?\s*")
re_range_count = re.compile(r"\s*([+-]?\s*\d+)\s*-\s*([+-]?\s*\d+)(?:\s*\[(\d+)\s*])?\s*")
re_range_count_float = re.compile(r"\s*([+-]?\s*\d+(?:.\d*)?)\s*-\s*([+-]?\s*\d+(?:.\d*)?)(?:\s*\[(\d+(?:.\d*)?)\s*])?\s*")


def csv_string_to_list_strip(data_str):
    from itertools import chain
    return list(map(str.strip, chain.from_iterable(csv.reader(StringIO(data_str)))))


def webui_process_axis(kind, vals):
    valslist = csv_string_to_list_strip(vals)
    if kind == int:
        valslist_ext = []
        for val in valslist:
            m = re_range.fullmatch(val)
            mc = re_range_count.fullmatch(val)
            if m is not None:
                start = int(m.group(1))
                end = int(m.group(2)) + 1
                step = int(m.group(3)) if m.group(3) is not None else 1
                valslist_ext += list(range(start, end, step))
            elif mc is not None:
                start = int(mc.group(1))
                end = int(mc.group(2))
                num = int(mc.group(3)) if mc.group(3) is not None else 1
                valslist_ext += [int(x) for x in np.linspace(start=start, stop=end, num=num).tolist()]
            else:
                valslist_ext.append(val)
        valslist = valslist_ext
    elif kind == float:
        valslist_ext = []
        for val in valslist:
            m = re_range_float.fullmatch(val)
            mc = re_range_count_float.fullmatch(val)
            if m is not None:
                start = float(m.group(1))
                end = float(m.group(2))
                step = float(m.group(3)) if m.group(3) is not None else 1
                valslist_ext += np.arange(start, end + step, step).tolist()
            elif mc is not None:
                start = float(mc.group(1))
                end = float(mc.group(2))
                num = int(mc.group(3)) if mc.group(3) is not None else 1
                valslist_ext += np.linspace(start=start, stop=end, num=num).tolist()
            else:
                valslist_ext.append(val)
        valslist = valslist_ext
    return [kind(x) for x in valslist]
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("label, kind, text", [
    ("Steps", int, "1-5"), ("Steps", int, "1-5 (+2)"), ("Steps", int, "1-3 [3]"), ("Steps", int, "10-20 [4]"),
    ("Seed", int, "10-1 (-3)"), ("Seed", int, "1, 2,  7 , 1-3"), ("Seed", int, "5-1"), ("Steps", int, "20"),
    ("CFG Scale", float, "1-5"), ("CFG Scale", float, "1-2 (+0.5)"), ("CFG Scale", float, "0-1 [5]"),
    ("CFG Scale", float, "7, 9.5, 12"), ("Denoising", float, "0.2-0.8 [4]"), ("Denoising", float, "0.25,0.75"),
])
def test_values_parse_as_sd_webui(label, kind, text):
    expected = webui_process_axis(kind, text)
    if not expected:
        with pytest.raises(GenpixError, match="no values"):
            parse_axis(label, text)
        return
    axis = parse_axis(label, text)
    assert list(axis.values) == expected and all(type(v) is kind for v in axis.values)


def test_examples_of_the_syntax():
    assert parse_axis("steps", "1-5 (+2)").values == (1, 3, 5)
    assert parse_axis("Steps", "1-3 [3]").values == (1, 2, 3)
    assert parse_axis("CFG Scale", "0-1 [5]").values == (0.0, 0.25, 0.5, 0.75, 1.0)


def test_overrides_and_legends_per_axis_type():
    prompt_sr = parse_axis("Prompt S/R", 'cat, dog,"red, fox"', prompt="a cat on a mat", negative_prompt="cat hair")
    assert [o["prompt"] for o in prompt_sr.overrides] == ["a cat on a mat", "a dog on a mat", "a red, fox on a mat"]
    assert prompt_sr.overrides[1]["negative_prompt"] == "dog hair" and prompt_sr.labels[2] == "red, fox"
    sampler = parse_axis("Sampler", "Euler a, DPM++ 2M Karras")
    assert sampler.overrides[1] == {"sampler_name": "DPM++ 2M Karras"} and sampler.labels == ("Euler a", "DPM++ 2M Karras")
    assert parse_axis("Schedule type", "Karras, exponential").overrides[1] == {"scheduler": "exponential"}
    assert parse_axis("Clip skip", "1-2").overrides[1] == {"override_settings": {"CLIP_stop_at_last_layers": 2}}
    ckpt = parse_axis("Checkpoint name", "models/a.safetensors, b", checkpoints=["models/a.safetensors", "b"])
    assert ckpt.overrides[0] == {"override_settings": {"sd_model_checkpoint": "models/a.safetensors"}}
    assert ckpt.labels == ("a.safetensors", "b")
    assert parse_axis("CFG Scale", "7, 7.5").labels == ("CFG Scale: 7.0", "CFG Scale: 7.5")
    assert parse_axis("Denoising", "0.5").overrides == ({"denoising_strength": 0.5},)
    seeds = parse_axis("Seed", "-1, 5", rng=random.Random(0)).values
    assert seeds[1] == 5 and seeds[0] == random.Random(0).randrange(4294967294)


@pytest.mark.parametrize("label, text, kwargs, message", [
    ("Sampler", "Euler, Eulerish", {}, "unknown sampler 'Eulerish'"),
    ("Schedule type", "Cosine", {}, "unknown schedule type"),
    ("Steps", "ten", {}, "Steps value 'ten' is not a whole number"),
    ("Steps", "0-2", {}, "at least 1"),
    ("Prompt S/R", "dog, cat", {"prompt": "a cat"}, "did not find 'dog'"),
    ("Checkpoint name", "c", {"checkpoints": ["a", "b"]}, "unknown checkpoint 'c'; choose one of: a, b"),
    ("Colour", "red", {}, "unknown X/Y/Z axis type 'Colour'"),
    ("Steps", "1-5 (+0)", {}, "step of 0"),
])
def test_bad_axes_are_one_line_errors(label, text, kwargs, message):
    with pytest.raises(GenpixError, match=re.escape(message)):
        parse_axis(label, text, **kwargs)


def test_cells_merge_overrides_with_the_costliest_axis_outermost():
    x = parse_axis("Steps", "10, 20")
    y = parse_axis("Checkpoint name", "a, b")
    z = parse_axis("Clip skip", "1, 2")
    order = cells(x, y, z)
    assert [c.iy for c in order] == [0, 0, 0, 0, 1, 1, 1, 1]  # the checkpoint changes once
    assert order[0].overrides == {"steps": 10, "override_settings": {"sd_model_checkpoint": "a",
                                                                     "CLIP_stop_at_last_layers": 1}}
    assert [(c.ix, c.iz) for c in cells(x, z=z)] == [(0, 0), (1, 0), (0, 1), (1, 1)]  # z, y, x otherwise


def test_plot_draws_a_labelled_grid_of_the_cells():
    x, y = parse_axis("CFG Scale", "3, 7, 11"), parse_axis("Steps", "5, 10")
    seen = []

    def generate(overrides):
        seen.append(overrides)
        shade = int(overrides["cfg_scale"] * 20)
        return Image.new("RGB", (64, 48), (shade, overrides["steps"] * 20, 0))

    result = plot(generate, x, y)
    assert len(seen) == 6 and len(result.images) == 6
    assert result.images[4].getpixel((0, 0)) == (140, 200, 0)  # ix 1 + iy 1 * 3: CFG 7, 10 steps
    grid = result.grid
    pad_left = 64 * 3 // 4
    assert grid.width == pad_left + 3 * 64 and grid.height > 2 * 48  # room for the column labels above
    pad_top = grid.height - 2 * 48
    assert grid.getpixel((pad_left + 64 + 5, pad_top + 48 + 5)) == (140, 200, 0)
    label_band = np.asarray(grid.crop((pad_left, 0, grid.width, pad_top)).convert("L"))
    row_band = np.asarray(grid.crop((0, pad_top, pad_left, grid.height)).convert("L"))
    assert (label_band < 128).any() and (row_band < 128).any()  # text was drawn
    bare = plot(generate, x, y, draw_legend=False).grid
    assert bare.size == (3 * 64, 2 * 48)


def test_z_axis_gives_side_by_side_titled_grids():
    x, z = parse_axis("Steps", "1, 2"), parse_axis("Seed", "1, 2, 3")
    result = plot(lambda o: Image.new("RGB", (32, 32), "gray"), x, z=z)
    assert len(result.images) == 6 and result.grid.width == 3 * 2 * 32 and result.grid.height > 32 + 10
