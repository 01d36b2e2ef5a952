"""`emoji-captions`: the emoji repeated with captions from the Unicode name and the picture's colour."""

import numpy as np
import pytest

from genpix.data import load_dataset
from genpix.data.emoji_captions import (CAPTION_VARIANTS, caption_variants, emoji_captions, emoji_colour,
                                        emoji_subject)


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
