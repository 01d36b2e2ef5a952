"""The XKCD colour lexicon (data/colour_lexicon.py) and `emoji-colour-names`: emoji tinted to named
colours and captioned with the names, one name in ten held out."""

import numpy as np

from genpix.data import load_dataset
from genpix.data.colour_lexicon import HELD_OUT_EVERY, colour_lexicon, is_held_out, training_names
from genpix.data.colour_names import dominant_colour
from genpix.data.emoji_captions import CAPTION_VARIANTS, NAMED_COPIES
from genpix.data.recolour import tint


def test_lexicon_reads_names_rgb_and_their_basic_colour():
    lexicon = {c.name: c for c in colour_lexicon()}
    assert len(lexicon) == 949
    assert lexicon["red"].rgb == (229, 0, 0) and lexicon["red"].basic == "red"
    assert lexicon["navy"].rgb == (1, 21, 62) and lexicon["navy"].basic == "blue"
    assert lexicon["tangerine"].basic == "orange" and lexicon["ivory"].basic == "white"
    assert {c.basic for c in lexicon.values()} == {"black", "white", "grey", "red", "orange", "yellow", "green",
                                                   "blue", "purple", "pink", "brown"}
    hue, saturation, value = lexicon["navy"].hsv
    assert 215 < hue < 225 and saturation > 0.95 and abs(value - 62 / 255) < 1e-9


def test_one_name_in_ten_is_held_out_by_a_fixed_hash():
    held = [c for c in colour_lexicon() if c.held_out]
    assert 0.7 / HELD_OUT_EVERY < len(held) / 949 < 1.3 / HELD_OUT_EVERY
    assert all(is_held_out(c.name) == c.held_out for c in colour_lexicon())
    assert not {c.name for c in training_names()} & {c.name for c in held}


def test_a_tint_to_a_named_colour_reads_as_its_basic_colour():
    image = np.full((3, 32, 32), 255, dtype=np.uint8)
    image[:, 8:24, 8:24] = np.array([200, 30, 30])[:, None, None]  # a red square on white
    for entry in colour_lexicon()[::37]:
        tinted = tint(image, entry.hsv)
        if entry.basic != "white":  # white on the white background is not an object
            assert dominant_colour(tinted) == entry.basic, entry


def test_emoji_colour_names_adds_named_tints_captioned_with_training_names():
    plain = load_dataset("emoji", split="test")
    named = load_dataset("emoji-colour-names", split="test")
    before = load_dataset("emoji-colours", split="test")
    assert named.captions[:len(before)] == before.captions and named.name == "emoji-colour-names"
    tail, images = named.captions[len(before):], named.images[len(before):].numpy()
    assert 0.6 * NAMED_COPIES * len(plain) <= len(tail) <= NAMED_COPIES * len(plain)
    trained = list(training_names())
    names_used = set()
    for image, caption in zip(images, tail):
        words = f" {caption.replace(',', ' ').replace(' emoji on a white background', '')} "
        found = [c for c in trained if f" {c.name} " in words]
        names_used.update(c.name for c in found)
        assert any(dominant_colour(image) == c.basic for c in found), (caption, found)
    assert len(names_used) > 0.5 * len(trained)
    assert len({c for c in tail}) > len(tail) / CAPTION_VARIANTS
