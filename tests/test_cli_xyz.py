"""genpix xyz: sd-webui's X/Y/Z plot from the command line; each cell is the generation the same
request with the cell's overrides gives through the Python API."""

from __future__ import annotations

import numpy as np
from PIL import Image

import genpix
from genpix.io.images import parse_infotext


def test_xyz_cells_are_the_generations_they_label(run_cli, tmp_path):
    status, out, err = run_cli("xyz", "a red circle at the top left", "--model", "shapes-ldm", "--x-type", "Steps",
                               "--x-values", "2-4 (+2)",
                               "--y-type", "Prompt S/R", "--y-values", "red, blue", "--seed", 4,
                               "-o", tmp_path / "grid.png", "--cells", tmp_path / "cells")
    assert status == 0, err
    assert "4-cell X/Y/Z grid" in out
    grid = Image.open(tmp_path / "grid.png")
    assert grid.width >= 2 * 128 and grid.height >= 2 * 128  # enlarged cells plus the labels
    pipe = genpix.load_pipeline("shapes-ldm")
    for index, (steps, prompt) in enumerate([(2, "red"), (4, "red"), (2, "blue"), (4, "blue")]):
        cell = Image.open(tmp_path / "cells" / f"{index:05d}.png")
        want = pipe(prompt=f"a {prompt} circle at the top left", steps=steps, seed=4).images[0]
        assert np.array_equal(np.asarray(cell), np.asarray(want))
        fields = parse_infotext(cell.info["parameters"])
        assert fields["Steps"] == str(steps) and fields["Prompt"] == f"a {prompt} circle at the top left"


def test_xyz_bad_axes_are_one_line_errors(run_cli, tmp_path):
    status, _, err = run_cli("xyz", "a red circle", "--x-type", "Sampler", "--x-values", "Euler z", "-o",
                             tmp_path / "g.png")
    assert status == 1 and "unknown sampler 'Euler z'" in err and len(err.strip().splitlines()) == 1
    status, _, err = run_cli("xyz", "a red circle", "--x-type", "Prompt S/R", "--x-values", "green, blue", "-o",
                             tmp_path / "g.png")
    assert status == 1 and "Prompt S/R did not find 'green'" in err
    status, _, err = run_cli("xyz", "a red circle", "-o", tmp_path / "g.png")
    assert status == 1 and "give the X axis" in err


def test_generate_applies_sd_webui_styles(run_cli, tmp_path):
    styles = tmp_path / "styles.csv"
    styles.write_text('name,prompt,negative_prompt\nshiny,"{prompt}, glossy",dull\nplain,flat,\n', encoding="utf-8")
    status, _, err = run_cli("generate", "a red circle", "--style", "shiny", "--style", "plain", "--styles-file",
                             styles, "--steps", 2, "-o", tmp_path / "out")
    assert status == 0, err
    fields = parse_infotext(Image.open(tmp_path / "out" / "00000.png").info["parameters"])
    assert fields["Prompt"] == "a red circle, glossy, flat" and fields["Negative prompt"] == "dull"
    status, _, err = run_cli("generate", "a red circle", "--style", "nope", "--styles-file", styles, "-o", tmp_path)
    assert status == 1 and "unknown style 'nope'; the styles are: shiny, plain" in err
