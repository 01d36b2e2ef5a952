"""`emoji-captions`: the emoji repeated with captions from the Unicode name and the picture's colour;
`emoji-colours`: and tinted to other colours (data/recolour.py)."""

import numpy as np
import pytest

from genpix.data import load_dataset
from genpix.data.colour_names import dominant_colour, rgb_to_hsv
from genpix.data.emoji_captions import (CAPTION_VARIANTS, RECOLOURED_COPIES, caption_variants, emoji_captions,
                                        emoji_colour, emoji_subject)
from genpix.data.recolour import hsv_to_rgb, main_region, recolour


@pytest.fixture(scope="module")
def emoji():
    """(the plain emoji, the captioned ones), rendered once into the user's cache."""
    return load_dataset("emoji", split="all"), load_dataset("emoji-captions", split="all")


def test_names_lose_unicode_typography_not_their_meaning():
    assert emoji_subject("heavy black heart") == "heart"  # Unicode's black = filled: the picture is red
    assert emoji_subject("large red circle") == "large circle"
    assert emoji_subject("white smiling face") == "smiling face"
    assert emoji_subject("black") == "black"  # nothing else left: the name itself


def test_variants_of_a_red_heart():
    variants = caption_variants("heavy black heart", "red")
    assert len(set(variants)) == CAPTION_VARIANTS
    assert {"heavy black heart", "a red heart", "an emoji of a red heart", "a red heart icon", "heart, red"} <= set(variants)
    assert "an orange heart icon" in caption_variants("orange heart", "orange")


def test_colour_words_come_from_the_name_else_the_pixels(emoji):
    plain, _ = emoji
    captions = list(plain.captions)
    picture = {name: plain.images[captions.index(name)].numpy() for name in
               ("heavy black heart", "green apple", "grinning face", "blue heart", "tangerine", "purple heart")}
    assert emoji_colour("heavy black heart", picture["heavy black heart"]) == "red"  # read from the pixels
    assert emoji_colour("grinning face", picture["grinning face"]) == "yellow"
    assert emoji_colour("tangerine", picture["tangerine"]) == "orange"
    assert emoji_colour("green apple", np.full((3, 64, 64), 255, np.uint8)) == "green"  # said by the name


def test_every_emoji_gets_every_variant_once_in_a_fixed_order(emoji):
    plain, rich = emoji
    n = len(plain)
    assert len(rich) == CAPTION_VARIANTS * n and rich.images.shape[1:] == (3, 64, 64)
    assert np.array_equal(rich.images[n + 5].numpy(), plain.images[5].numpy())  # copy 1 of emoji 5
    heart = list(plain.captions).index("heavy black heart")
    copies = [rich.captions[c * n + heart] for c in range(CAPTION_VARIANTS)]
    assert sorted(copies) == sorted(caption_variants("heavy black heart", "red"))
    again = load_dataset("emoji-captions", split="all", limit=n + 3)  # the same captions on every load
    assert again.captions == rich.captions[: n + 3]
    variants = [tuple(f"{i}-{k}" for k in range(CAPTION_VARIANTS)) for i in range(4)]
    assert emoji_captions(variants, 0, seed=0) != emoji_captions(variants, 0, seed=1)


def test_split_size_and_limit_follow_the_emoji(emoji):
    plain, _ = emoji
    test = load_dataset("emoji-captions", split="test", image_size=32)
    assert len(test) == CAPTION_VARIANTS * (len(plain) // 10) and test.images.shape[1:] == (3, 32, 32)
    few = load_dataset("emoji-captions", split="train", limit=5)
    assert len(few) == 5 and len(set(few.captions)) == 5
    assert load_dataset("emoji", split="train").captions[:3] == load_dataset("emoji", split="train", limit=3).captions


# ---------------------------------------------------------------- emoji-colours: tinted copies

def test_hsv_round_trip_and_known_values():
    rgb = np.random.default_rng(0).random((500, 3))
    assert np.allclose(hsv_to_rgb(rgb_to_hsv(rgb)), rgb, atol=1e-9)
    assert np.allclose(rgb_to_hsv(np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.5, 0.5, 0.5]])),
                       [[0, 1, 1], [240, 1, 1], [0, 0, 0.5]])


@pytest.mark.parametrize("name", ["grinning face", "frog face", "heavy black heart", "cloud"])
def test_a_tint_reads_as_its_colour_keeps_shading_and_leaves_the_rest(emoji, name):
    plain, _ = emoji
    image = plain.images[list(plain.captions).index(name)].numpy()
    region = main_region(image)
    for colour in ("red", "green", "blue", "purple", "pink", "brown", "black"):
        tinted = recolour(image, colour)
        assert dominant_colour(tinted) == colour, (name, colour)
        assert np.array_equal(tinted[:, ~region], image[:, ~region])  # outlines, eyes, background kept
    value = lambda im: im[:, region].max(axis=0).astype(float)  # noqa: E731 (HSV value of the region)
    if value(image).std() > 5:  # shaded: lighter pixels stay lighter
        assert np.corrcoef(value(image), value(recolour(image, "blue")))[0, 1] > 0.9


def test_emoji_colours_adds_read_tinted_copies_with_their_colour_in_the_caption(emoji):
    plain = load_dataset("emoji", split="test")
    rich = load_dataset("emoji-colours", split="test")
    n = CAPTION_VARIANTS * len(plain)
    tinted, captions = rich.images[n:].numpy(), rich.captions[n:]
    assert rich.captions[:n] == load_dataset("emoji-captions", split="test").captions
    assert 0.8 * RECOLOURED_COPIES * len(plain) <= len(tinted) <= RECOLOURED_COPIES * len(plain)
    for image, caption in zip(tinted, captions):
        colour = dominant_colour(image)
        assert colour in caption.replace(",", " ").split(), (caption, colour)
    assert len({dominant_colour(image) for image in tinted}) >= 10  # every basic colour but white, at least
    assert load_dataset("emoji-colours", split="test", limit=n + 4).captions == rich.captions[:n + 4]
