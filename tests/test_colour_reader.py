"""The picture reader (genpix.eval.colour_reader) on real emoji, the shapes data and made-up pictures, and
the reworded prompts of benchmarks/emoji_prompts.py."""

import itertools
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from genpix.data import load_dataset
from genpix.data.colour_names import BASIC_COLOURS, dominant_colour, pixel_colour_names
from genpix.data.synthetic import COLOURS, SHAPES, render_shape
from genpix.eval.colour_reader import colour_fidelity, read_picture

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))


@pytest.fixture(scope="module")
def emoji():
    ds = load_dataset("emoji", split="all")
    return {name: ds.images[i].numpy() for i, name in enumerate(ds.captions)}


@pytest.mark.parametrize("name, colour", [
    ("heavy black heart", "red"), ("green heart", "green"), ("blue heart", "blue"), ("yellow heart", "yellow"),
    ("purple heart", "purple"), ("orange heart", "orange"), ("brown heart", "brown"), ("black heart", "black"),
    ("tangerine", "orange"), ("red apple", "red"), ("green apple", "green"), ("large red circle", "red"),
    ("large blue circle", "blue"), ("grinning face", "yellow"), ("cloud", "grey"), ("lemon", "yellow"),
    ("evergreen tree", "green"), ("pile of poo", "brown"), ("large purple square", "purple"),
])
def test_reads_the_colour_of_real_emoji(emoji, name, colour):
    assert read_picture(emoji[name]).colour == colour


def test_reads_colour_and_shape_of_the_shapes_data_on_any_background():
    for k, (shape, colour) in enumerate(itertools.product(SHAPES, COLOURS)):
        image = render_shape(shape, colour, "centre", size=32, rng=np.random.default_rng(k))
        assert (read_picture(image, shapes=True).colour, read_picture(image, shapes=True).shape) == (colour, shape)
    on_white = np.where(render_shape("triangle", "white", "centre", size=64) > 0, 0, 255).astype(np.uint8)
    reading = read_picture(Image.fromarray(on_white.transpose(1, 2, 0)), shapes=True)  # black triangle, white ground
    assert (reading.colour, reading.shape) == ("black", "triangle")


def test_pixel_names_follow_the_hue_value_and_saturation():
    pixels = np.array([[230, 20, 20], [255, 140, 0], [250, 220, 20], [40, 200, 40], [40, 90, 255], [150, 40, 220],
                       [255, 105, 180], [120, 70, 30], [10, 10, 10], [250, 250, 250], [128, 128, 128]])
    names = [BASIC_COLOURS[i] for i in pixel_colour_names(pixels)]
    assert names == ["red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white", "grey"]


def test_a_small_coloured_object_wins_over_its_grey_outline():
    image = np.full((3, 32, 32), 255, np.uint8)
    image[:, 4:28, 4:28] = 90  # grey frame
    image[:, 10:22, 10:22] = np.array([30, 200, 30])[:, None, None]  # green centre: a third of the object
    assert dominant_colour(image) == "green"
    assert colour_fidelity([image, np.full((3, 8, 8), 255, np.uint8)], "green") == 0.5


def test_benchmark_prompts_are_reworded_and_enough():
    from emoji_prompts import plain_prompts, prompts

    from genpix.data.emoji_captions import tinted_caption_variants
    from genpix.data.recolour import TINTS

    cases = prompts()
    assert len(cases) >= 60 and {colour for _, colour, _ in cases} <= set(BASIC_COLOURS)
    names = load_dataset("emoji", split="all").captions  # every caption a tinted copy of emoji-colours can get:
    tinted = {c for name in names for colour in TINTS for c in tinted_caption_variants(name, colour)}
    training = set(load_dataset("emoji-captions", split="all").captions) | tinted | set(load_dataset("shapes", split="all").captions)
    words = {word for caption in training for word in caption.replace(",", " ").split()}
    assert not training & {prompt for prompt, _, _ in cases}
    plain = [p for p, colour, _ in cases if colour in p.replace(",", " ").split()]  # "lime green", "sky blue"
    assert len(plain) < len(cases) / 3, plain
    assert {"crimson", "azure", "scarlet", "violet"} <= {w for p, _, _ in cases for w in p.split()} - words
    plain = plain_prompts()  # --plain: the basic colour word in the synonym's place, nothing else changed
    assert [(c, s) for _, c, s in plain] == [(c, s) for _, c, s in cases]
    assert all(colour in p.replace(",", " ").split() and "  " not in p for p, colour, _ in plain)
    assert ("an azure disc", "a blue disc") in {(a[0], b[0]) for a, b in zip(cases, plain)}
