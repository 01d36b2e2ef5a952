"""The generative trilemma report: quality, sampling speed and mode coverage of VAE, DCGAN and DDPM
trained for the same CPU budget (shared/seeds/003: no family has all three).

This module holds the report's configuration, its rows and how they are written (a Markdown table,
a quality-against-speed plot and sample grids); ``genpix report`` (cli/report.py) trains the models
and measures the rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from genpix.config import check
from genpix.io.atomic import write_atomic

FAMILIES: tuple[str, ...] = ("vae", "gan", "ddpm")
ONE_WAY = {"vae": "decoder", "gan": "generator"}  # families sampled one way: the row's label
# (sampler, steps) of the diffusion rows: the full DDIM walk and two few-step samplers
DIFFUSION_SAMPLERS: tuple[tuple[str, int], ...] = (("DDIM", 50), ("DDIM", 10), ("DPM++ 2M", 10))


@dataclass(frozen=True)
class ReportConfig:
    data: str = "fashion-mnist"
    families: tuple[str, ...] = FAMILIES
    budget_s: float = 600.0  # training wall-clock budget of each family (its steps are set from a timing)
    batch_size: int = 64
    limit: int | None = None  # use only the first N training images
    num_images: int = 1000  # generated images per row, and real test images they are compared with
    diffusion: tuple[tuple[str, int], ...] = DIFFUSION_SAMPLERS
    max_steps: int | None = None  # cap on each family's training steps
    seed: int = 0

    def __post_init__(self) -> None:
        from genpix.diffusion import samplers

        unknown = [f for f in self.families if f not in FAMILIES]
        check(not unknown and len(self.families) >= 1,
              f"unknown family {', '.join(unknown) or '(none)'}; choose from: {', '.join(FAMILIES)}")
        check(self.budget_s > 0, f"the training budget must be positive, got {self.budget_s}")
        check(self.batch_size >= 1 and self.num_images >= 2, "batch size must be >= 1 and images >= 2")
        check(self.max_steps is None or self.max_steps >= 1, f"max_steps must be >= 1, got {self.max_steps}")
        for name, steps in self.diffusion:
            samplers.get(name)  # an unknown name: one line listing the known ones
            check(steps >= 1, f"sampling steps must be >= 1, got {steps} for {name}")

    def ways(self, family: str) -> list[tuple[str, dict[str, Any]]]:
        """The rows of one family: (label, sampling options); a diffusion family's samplers, else one."""
        if family in ONE_WAY:
            return [(ONE_WAY[family], {})]
        return [(f"{name} ({n} steps)", {"sampler": name, "steps": n}) for name, n in self.diffusion]


@dataclass(frozen=True)
class Row:
    family: str
    sampler: str  # "decoder", "generator", or "DDIM (10 steps)"
    train_steps: int
    train_s: float  # wall-clock seconds of `genpix train` (loading, steps, final files)
    ms_per_image: float  # sampling, including loading the model once
    metrics: dict[str, Any]  # fid, precision, recall, class_coverage, class_entropy, ... (report.evaluate)
    grid: str | None = None  # the sample grid's file name beside the report

    @property
    def label(self) -> str:
        return self.family if self.sampler in ("decoder", "generator") else f"{self.family} {self.sampler}"


def _figure(value: Any, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def markdown(config: ReportConfig, rows: list[Row], reference: dict[str, Any], info: dict[str, Any],
             plot: str) -> str:
    """The report: setup, the table, the plot and the sample grids."""
    lines = ["# The generative trilemma on this machine", "",
             f"VAE, DCGAN and DDPM trained on `{config.data}` for the same CPU budget of {config.budget_s:g} s "
             f"each (batch {config.batch_size}; steps set from a timing of each family's training step), then "
             f"{config.num_images} samples of each compared with {config.num_images} test images on "
             f"{info['features']} ({info['note']}). Made by `genpix report`; {info['machine']}.", "",
             "| model | train steps | train s | Fréchet distance (lower is better) | precision | recall | "
             "class coverage | class entropy | sampling ms/image |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        m = r.metrics
        lines.append(f"| {r.label} | {r.train_steps} | {r.train_s:.0f} | {_figure(m['fid'])} | "
                     f"{_figure(m['precision'])} | {_figure(m['recall'])} | {_figure(m['class_coverage'])} | "
                     f"{_figure(m['class_entropy'])} | {r.ms_per_image:.2f} |")
    m = reference
    lines += [f"| real train images (the floor at this N) | | | {_figure(m['fid'])} | {_figure(m['precision'])} | "
              f"{_figure(m['recall'])} | {_figure(m['class_coverage'])} | {_figure(m['class_entropy'])} | |", "",
              "Quality: the Fréchet distance; speed: sampling ms/image; coverage: recall (Kynkäänniemi et al. "
              "2019) and the entropy of the classifier's class histogram (1 = every class equally often).", "",
              f"![quality against speed]({plot})", ""]
    for r in rows:
        if r.grid:
            lines += [f"**{r.label}**", "", f"![{r.label} samples]({r.grid})", ""]
    return "\n".join(lines)


def plot_quality_speed(rows: list[Row], path: Path, size: tuple[int, int] = (640, 420)) -> Path:
    """A scatter of Fréchet distance (y) against sampling ms/image (x, log scale), one labelled point
    per row, drawn with PIL (no plotting library needed)."""
    w, h = size
    left, right, top, bottom = 70, 160, 20, 50  # room on the right for the last point's label
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    xs = [math.log10(max(r.ms_per_image, 1e-3)) for r in rows]
    ys = [r.metrics["fid"] for r in rows]
    x0, x1 = min(xs) - 0.2, max(xs) + 0.2
    y1 = max(ys) * 1.15 or 1.0

    def at(x: float, y: float) -> tuple[float, float]:
        return (left + (x - x0) / (x1 - x0) * (w - left - right), h - bottom - y / y1 * (h - top - bottom))

    draw.line([(left, top), (left, h - bottom), (w - right, h - bottom)], fill="black")
    for decade in range(math.ceil(x0), math.floor(x1) + 1):
        px, _ = at(decade, 0)
        draw.line([(px, h - bottom), (px, h - bottom + 5)], fill="black")
        draw.text((px - 12, h - bottom + 8), f"{10 ** decade:g}", fill="black")
    for i in range(5):
        _, py = at(0, y1 * i / 4)
        draw.line([(left - 5, py), (left, py)], fill="black")
        draw.text((5, py - 6), f"{y1 * i / 4:.3g}", fill="black")
    draw.text((w // 2 - 90, h - 22), "sampling ms/image (log scale)", fill="black")
    draw.text((5, 2), "Frechet distance", fill="black")
    colours = {"vae": (31, 119, 180), "gan": (214, 39, 40), "ddpm": (44, 160, 44)}
    for r, x, y in zip(rows, xs, ys):
        px, py = at(x, y)
        draw.ellipse([px - 5, py - 5, px + 5, py + 5], fill=colours.get(r.family, (0, 0, 0)))
        draw.text((px + 8, py - 6), r.label, fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, lambda p: image.save(p, format="PNG"))
    return path


def write_report(path: str | Path, config: ReportConfig, rows: list[Row], reference: dict[str, Any],
                 info: dict[str, Any]) -> Path:
    """Write ``path`` (Markdown) and its plot into ``<stem>-images/`` beside it (the grids go there too)."""
    path = Path(path)
    plot = plot_quality_speed(rows, images_dir(path) / "quality-speed.png")
    text = markdown(config, rows, reference, info, f"{plot.parent.name}/{plot.name}") + "\n"
    write_atomic(path, lambda p: p.write_text(text, encoding="utf-8"))
    return path


def images_dir(report_path: str | Path) -> Path:
    report_path = Path(report_path)
    return report_path.with_name(f"{report_path.stem}-images")
