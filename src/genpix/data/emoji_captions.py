"""`emoji-captions`: the emoji with several captions each, worded from the Unicode name and the colour.

A Unicode name is a poor caption: "heavy black heart" is a red heart (Unicode's "black" means
filled, "white" outlined, "heavy" bold), and one fixed string per picture teaches a model strings,
not language. Each emoji here gets CAPTION_VARIANTS captions: the name, its subject with the colour
("a red heart"), templates ("an emoji of a red heart", "a red heart icon"), keywords in another
order ("heart, red"). The colour is the name's own colour word when it has one ("green apple"),
else the picture's dominant basic colour (data/colour_names.py), so colour words mean what is drawn
and a frozen sentence encoder (models/text.py SentenceEncoder) can carry synonyms ("crimson",
"azure") to them. The dataset repeats every emoji once per caption variant; which variant a copy
gets is a fixed function of (emoji index, copy, seed), as data/captions.py does for Fashion-MNIST.

In the emoji, colour goes with the object (frogs are green, faces yellow), so a model learns "frog"
-> green, not "green" -> green. ``recoloured`` adds that many more copies of every emoji with its
main colour tinted to another basic colour (data/recolour.py) and captioned with it ("a purple
frog"): the dataset `emoji-colours`. ``named`` adds copies tinted to the colours of the XKCD
survey's names and captioned with them ("a dusty rose frog", data/colour_lexicon.py): the dataset
`emoji-colour-names`, which teaches a model colour names a text encoder does not carry to their basic term.

``phrased`` words the tinted copies in PHRASE_TEMPLATES as well ("a frog dyed dusty rose", "the
colour teal on a kite"): the dataset `emoji-colour-phrases`, same pictures as `emoji-colour-names`.
A colour head (models/colour_head.py) that was only shown a colour name before its object or at
the end of a short caption puts its weight on any word about colour; these sentences put the name
after other words about colour (paint, dye, tint, hue, "colour") that name none.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .captions import _KNUTH
from .colour_lexicon import training_names
from .colour_names import dominant_colour
from .dataset import ImageDataset, Split, make_dataset
from .emoji import EMOJI_NATIVE_SIZE, load_emoji
from .recolour import TINTS, tint
from .transforms import resize_images

CAPTION_VARIANTS = 8
RECOLOURED_COPIES = 8  # tinted copies of every emoji in `emoji-colours`
NAMED_COPIES = 32  # copies tinted to named colours in `emoji-colour-names`
TYPOGRAPHIC = frozenset({"black", "white", "heavy"})  # Unicode's filled, outlined and bold, not colours
NAME_COLOURS = ("red", "orange", "yellow", "green", "blue", "purple", "brown", "pink")
FILLER = frozenset({"with", "and", "of", "the", "a", "an", "in", "on", "for", "sign", "symbol"})
# more sentences for a tinted copy: {a} the subject with its article, {s} without, {c} the colour
PHRASE_TEMPLATES = (
    "{a} painted {c}", "{a} that is {c}", "{s} with a {c} tint", "{c}: {s}", "the {s} is {c}", "{a}, all {c}",
    "{a} in shades of {c}", "a {c} {s} sticker", "{a} dyed {c}", "{a} whose colour is {c}", "{a} in a {c} hue",
    "{a} tinted {c}", "the colour {c} on {a}", "{s}, colour: {c}", "{a} with {c} paint", "{a} in {c} tones")


def _article(phrase: str) -> str:
    return f"{'an' if phrase[:1] in 'aeiou' else 'a'} {phrase}"


def emoji_subject(name: str) -> str:
    """The name without its typographic and colour words: "heavy black heart" -> "heart",
    "large red circle" -> "large circle" (the name itself when nothing else is left)."""
    words = [w for w in name.split() if w not in TYPOGRAPHIC and w not in NAME_COLOURS]
    return " ".join(words) or name


def emoji_colour(name: str, image: np.ndarray) -> str:
    """The colour word of the name ("green apple" -> green), else the picture's dominant colour."""
    said = [w for w in name.split() if w in NAME_COLOURS]
    return said[0] if said else dominant_colour(image)


def caption_variants(name: str, colour: str, subject: str | None = None) -> tuple[str, ...]:
    """The CAPTION_VARIANTS captions of the emoji called ``name`` whose colour is ``colour`` (any colour
    name, "red" or "dusty rose"); ``subject`` defaults to `emoji_subject` of the name."""
    subject = subject or emoji_subject(name)
    keywords = [w for w in subject.split() if w not in FILLER] or [subject]
    coloured = f"{colour} {subject}"
    variants = (
        name,
        _article(coloured),
        f"an emoji of {_article(coloured)}",
        f"{_article(coloured)} icon",
        ", ".join([*reversed(keywords), colour]),  # keywords in another order: "heart, red"
        coloured,  # "red heart"
        f"{_article(subject)} in {colour}",
        f"{coloured} emoji on a white background",
    )
    assert len(variants) == CAPTION_VARIANTS
    return variants


def emoji_captions(variants: list[tuple[str, ...]], copy: int, seed: int = 0) -> tuple[str, ...]:
    """Copy ``copy`` of every emoji (``variants[i]``: emoji i's `caption_variants`): variant (Knuth hash
    of (i, seed) + copy) mod CAPTION_VARIANTS, so the copies of one emoji all get different captions
    and every load gives the same ones."""
    return tuple(v[(_spread(i, seed) + copy) % CAPTION_VARIANTS] for i, v in enumerate(variants))


def _spread(i: int, seed: int) -> int:
    """Emoji i's fixed offset (a Knuth multiplicative hash of (i, seed)) into the variants and tints."""
    return ((i + 7919 * seed) * _KNUTH) % 2**32


def tinted_caption_variants(name: str, colour: str, phrased: bool = False) -> tuple[str, ...]:
    """The captions of emoji ``name`` tinted to ``colour``: `caption_variants` of "COLOUR SUBJECT", and
    with ``phrased`` the PHRASE_TEMPLATES after them."""
    subject = emoji_subject(name)
    variants = caption_variants(f"{colour} {subject}", colour, subject)
    if not phrased:
        return variants
    return variants + tuple(t.format(a=_article(subject), s=subject, c=colour) for t in PHRASE_TEMPLATES)


def recoloured_copies(images: np.ndarray, names: tuple[str, ...], colours: list[str], copies: int,
                      seed: int = 0, phrased: bool = False) -> tuple[np.ndarray, list[str]]:
    """``copies`` recoloured versions of every emoji (uint8 ``(N, 3, H, W)``, its Unicode ``names`` and
    read ``colours``): copy r of emoji i is tinted to the (hash of (i, seed) + r)-th basic colour other
    than its own, captioned with one of its `tinted_caption_variants`."""
    def pick(i: int, copy: int) -> tuple[str, tuple[float, float, float], str, int]:
        others = [c for c in TINTS if c != colours[i]]
        k = _spread(i, seed) + copy
        colour = others[k % len(others)]
        return colour, TINTS[colour], colour, k // len(others)
    return _tinted_copies(images, names, copies, pick, phrased)


def named_copies(images: np.ndarray, names: tuple[str, ...], copies: int, seed: int = 0,
                 phrased: bool = False) -> tuple[np.ndarray, list[str]]:
    """``copies`` versions of every emoji tinted to colours of the lexicon (data/colour_lexicon.py, its
    training names) and captioned with the colour's name ("a dusty rose frog"): copy r of emoji i takes
    the name (hash of (i, seed) + r * L / copies) mod L, so one emoji's copies spread over the lexicon."""
    lexicon = training_names()
    stride = max(len(lexicon) // max(copies, 1), 1)

    def pick(i: int, copy: int) -> tuple[str, tuple[float, float, float], str, int]:
        k = _spread(i, seed) + copy * stride
        entry = lexicon[k % len(lexicon)]
        return entry.name, entry.hsv, entry.basic, k // len(lexicon)
    return _tinted_copies(images, names, copies, pick, phrased)


def _tinted_copies(images: np.ndarray, names: tuple[str, ...], copies: int,
                   pick: Callable[[int, int], tuple[str, tuple[float, float, float], str, int]],
                   phrased: bool = False) -> tuple[np.ndarray, list[str]]:
    """Copy r of emoji i tinted as ``pick(i, r)`` says: (colour word of the caption, HSV target, the
    basic colour the tinted picture must read as, caption variant: an index into its
    `tinted_caption_variants`, modulo their number); a tint that does not read as its colour
    afterwards (white on the white background) is left out."""
    kept, captions = [], []
    for copy in range(copies):
        for i, (image, name) in enumerate(zip(images, names)):
            word, target, basic, variant = pick(i, copy)
            tinted = tint(image, target)
            if dominant_colour(tinted) == basic:
                kept.append(tinted)
                variants = tinted_caption_variants(name, word, phrased)
                captions.append(variants[variant % len(variants)])
    return np.stack(kept) if kept else images[:0], captions


def load_emoji_captions(split: Split = "train", *, image_size: int = EMOJI_NATIVE_SIZE, limit: int | None = None,
                        repeats: int = CAPTION_VARIANTS, recoloured: int = 0, named: int = 0, seed: int = 0,
                        phrased: bool = False, **emoji_options) -> ImageDataset:
    """The emoji of ``split`` repeated ``repeats`` times, copy c of emoji i at index c * N + i, each
    with its own caption (see `emoji_captions`), then ``recoloured`` tinted copies of each
    (`recoloured_copies`) and ``named`` copies tinted to named colours (`named_copies`), both worded
    in PHRASE_TEMPLATES too when ``phrased``; ``limit`` keeps the first images of that order (so
    ``limit <= N`` gives distinct emoji). The colours are read and tinted at 64 px whatever ``image_size``."""
    base = load_emoji(split, image_size=image_size, **emoji_options)
    native = base if image_size == EMOJI_NATIVE_SIZE else load_emoji(split, **emoji_options)
    colours = [emoji_colour(name, image) for name, image in zip(base.captions, native.images.numpy())]
    variants = [caption_variants(name, colour) for name, colour in zip(base.captions, colours)]
    copies = min(repeats, -(-limit // len(base))) if limit else repeats
    captions = [c for copy in range(copies) for c in emoji_captions(variants, copy, seed)]
    images = np.concatenate([base.images.numpy()] * copies)
    pictures = native.images.numpy()
    makers = ((recoloured, lambda: recoloured_copies(pictures, base.captions, colours, recoloured, seed, phrased)),
              (named, lambda: named_copies(pictures, base.captions, named, seed, phrased)))
    for copies_wanted, make in makers:
        if copies_wanted and (limit is None or limit > len(images)):
            tinted, tinted_captions = make()
            if image_size != EMOJI_NATIVE_SIZE:
                tinted = resize_images(tinted, image_size)
            images, captions = np.concatenate([images, tinted]), captions + tinted_captions
    name = ("emoji-colour-phrases" if phrased else "emoji-colour-names") if named else \
        "emoji-colours" if recoloured else "emoji-captions"
    return make_dataset(images[:limit], None, None, tuple(captions[:limit]), name, split)


def load_emoji_colours(split: Split = "train", **options) -> ImageDataset:
    """`emoji-colours`: `emoji-captions` and RECOLOURED_COPIES tinted copies of every emoji."""
    return load_emoji_captions(split, recoloured=RECOLOURED_COPIES, **options)


def load_emoji_colour_names(split: Split = "train", **options) -> ImageDataset:
    """`emoji-colour-names`: `emoji-colours` and NAMED_COPIES copies of every emoji tinted to colours
    of the lexicon and captioned with their names."""
    return load_emoji_captions(split, recoloured=RECOLOURED_COPIES, named=NAMED_COPIES, **options)


def load_emoji_colour_phrases(split: Split = "train", **options) -> ImageDataset:
    """`emoji-colour-phrases`: the pictures of `emoji-colour-names`, the tinted copies worded in
    PHRASE_TEMPLATES as well."""
    return load_emoji_colour_names(split, phrased=True, **options)
