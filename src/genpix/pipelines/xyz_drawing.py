"""Labelled image grids for the X/Y/Z plot, drawn with Pillow's default font in the layout of
sd-webui's ``draw_grid_annotations`` (modules/images.py): column labels above the columns, row
labels in a band left of the rows (3/4 of a cell wide), text (W + H) / 25 px, black on white,
wrapped to the cell width."""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont

from genpix.errors import GenpixError

BACKGROUND, INK = "white", "black"


def _font(cell_w: int, cell_h: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=max(10, (cell_w + cell_h) // 25))


def wrap(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> list[str]:
    """Words of ``text`` on lines no wider than ``width`` (a longer word keeps its own line)."""
    lines: list[str] = []
    for word in text.split():
        if lines and draw.textlength(f"{lines[-1]} {word}", font=font) <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines


def _line_height(font) -> int:
    box = font.getbbox("Ag")
    return box[3] - box[1] + 4


def _text_block(draw, lines: list[str], font, centre_x: float, top: float) -> None:
    for i, line in enumerate(lines):
        draw.text((centre_x, top + i * _line_height(font)), line, fill=INK, font=font, anchor="mt")


def draw_labelled_grid(images: Sequence[Image.Image], columns: int, x_labels: Sequence[str] | None,
                       y_labels: Sequence[str] | None, margin: int = 0) -> Image.Image:
    """``images`` (row by row, ``columns`` per row, all the first one's size) on a grid with
    ``margin`` px between cells, the labels drawn where given and not all empty."""
    if not images or len(images) % columns:
        raise GenpixError(f"a grid of {columns} columns needs a multiple of {columns} pictures, got {len(images)}")
    rows = len(images) // columns
    w, h = images[0].size
    font = _font(w, h)
    scratch = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    x_lines = [wrap(scratch, t, font, w) for t in x_labels] if x_labels and any(x_labels) else None
    y_lines = [wrap(scratch, t, font, w * 3 // 4) for t in y_labels] if y_labels and any(y_labels) else None
    pad_top = (max(map(len, x_lines)) * _line_height(font) + _line_height(font) // 2) if x_lines else 0
    pad_left = w * 3 // 4 if y_lines else 0
    grid = Image.new("RGB", (pad_left + columns * w + (columns - 1) * margin,
                             pad_top + rows * h + (rows - 1) * margin), BACKGROUND)
    draw = ImageDraw.Draw(grid)
    for i, image in enumerate(images):
        col, row = i % columns, i // columns
        grid.paste(image.convert("RGB"), (pad_left + col * (w + margin), pad_top + row * (h + margin)))
    for col, lines in enumerate(x_lines or []):
        _text_block(draw, lines, font, pad_left + col * (w + margin) + w / 2, _line_height(font) // 4)
    for row, lines in enumerate(y_lines or []):
        top = pad_top + row * (h + margin) + h / 2 - len(lines) * _line_height(font) / 2
        _text_block(draw, lines, font, pad_left / 2, top)
    return grid


def join_grids(grids: Sequence[Image.Image], titles: Sequence[str] | None, gap: int = 0) -> Image.Image:
    """The Z grids side by side, each under its title (sd-webui's z_grid), top-aligned."""
    if len(grids) == 1 and not (titles and any(titles)):
        return grids[0]
    font = _font(*grids[0].size) if titles and any(titles) else None
    scratch = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    lines = [wrap(scratch, t, font, g.width) for t, g in zip(titles, grids)] if font else [[] for _ in grids]
    pad_top = (max(map(len, lines)) * _line_height(font) + _line_height(font) // 2) if font else 0
    out = Image.new("RGB", (sum(g.width for g in grids) + gap * (len(grids) - 1),
                            pad_top + max(g.height for g in grids)), BACKGROUND)
    draw, left = ImageDraw.Draw(out), 0
    for grid, title in zip(grids, lines):
        out.paste(grid, (left, pad_top))
        if font:
            _text_block(draw, title, font, left + grid.width / 2, _line_height(font) // 4)
        left += grid.width + gap
    return out
