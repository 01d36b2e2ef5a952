"""Colour fidelity of a text-to-image model on prompts worded in ways never used in training.

Every prompt names a colour by a synonym the training captions never use ("crimson", "azure",
"lime green", "tangerine"; the captions of `emoji-captions` and `shapes` say only basic colour
names) and an object in other words ("a disc", "a tile", "a heart"). ``-n`` images are generated per
prompt and read by `genpix.eval.colour_reader.read_picture`; the score is the share of images whose
dominant colour is the asked one (and, for prompts naming a circle, square or triangle in other
words, the share with that shape). ``--colours`` keeps the prompts of the colours a model knows:
``--colours shapes`` for models trained on `shapes` (red, green, blue, yellow, purple, white).

    GENPIX_THREADS=1 python benchmarks/emoji_prompts.py shapes-ldm -n 4 --colours shapes --json out.json
    GENPIX_THREADS=1 python benchmarks/emoji_prompts.py emoji-ldm -n 4 --plain    # "a red disc" for "a crimson disc"
    GENPIX_THREADS=1 python benchmarks/emoji_prompts.py emoji-ldm -n 2 --held-out # names no caption used

Since `emoji-colour-names` (data/colour_lexicon.py) most of these synonyms are XKCD survey names that
its captions do use, in other sentences: the result splits the score by where the prompt's colour word
stands in the lexicon (a training name, a held-out name, not a name). ``--held-out`` asks instead for
every held-out name of the lexicon, judged by the basic colour of its own RGB.

A model with a colour head samples with the colour hint (pipelines/colour_hint.py) as `genpix generate`
does; ``--no-colour-hint`` measures it without. The result counts the prompts the hint touched.
"""

from __future__ import annotations

import time
from collections import defaultdict

import torch
from sampling_args import sampling_parser, write_json

import genpix
from genpix.data.colour_lexicon import colour_lexicon
from genpix.data.colour_names import BASIC_COLOURS
from genpix.data.synthetic import COLOURS as SHAPES_COLOURS
from genpix.device import set_cpu_threads
from genpix.eval.colour_reader import read_picture

# basic colour -> synonyms absent from every training caption
SYNONYMS: dict[str, tuple[str, ...]] = {
    "red": ("crimson", "scarlet", "ruby", "vermilion", "cherry red"),
    "blue": ("azure", "navy", "cobalt", "sapphire", "sky blue"),
    "green": ("emerald", "jade", "lime green", "forest green", "leafy green"),
    "yellow": ("golden", "canary", "lemon yellow", "sunflower yellow", "butter yellow"),
    "orange": ("tangerine", "apricot", "pumpkin orange", "carrot orange"),
    "purple": ("violet", "plum", "amethyst", "lilac", "grape purple"),
    "pink": ("rose", "fuchsia", "hot pink", "bubblegum pink"),
    "brown": ("chocolate", "mahogany", "cinnamon", "coffee-coloured"),
    "white": ("ivory", "snow-white", "milky white"),
}
# objects in words the captions do not use for them, with the shape class they ask for (or None)
OBJECTS: tuple[tuple[str, str | None], ...] = (
    ("disc", "circle"), ("round dot", "circle"), ("ball", "circle"), ("tile", "square"), ("box", "square"),
    ("block", "square"), ("wedge", "triangle"), ("heart", None), ("star", None), ("balloon", None),
)
TEMPLATES = ("{co}", "a drawing of {co}", "a {o} coloured {c}", "a picture of a {o}, {c}")  # co: "a crimson disc"


def _article(phrase: str) -> str:
    return f"{'an' if phrase[:1] in 'aeiou' else 'a'} {phrase}"


def prompts() -> list[tuple[str, str, str | None]]:
    """(prompt, asked basic colour, asked shape or None): each synonym once, the objects and templates
    taken in turn, so the list is fixed."""
    cases, k = [], 0
    for colour, synonyms in SYNONYMS.items():
        for synonym in synonyms:
            word, shape = OBJECTS[k % len(OBJECTS)]
            template = TEMPLATES[k % len(TEMPLATES)]
            cases.append((template.format(co=_article(f"{synonym} {word}"), c=synonym, o=word), colour, shape))
            k += 1
        for word, shape in OBJECTS[k % 3::4]:  # a second pass over the objects: "an emerald tile"
            prompt = _article(f"{synonyms[0]} {word}")
            if prompt not in {case[0] for case in cases}:
                cases.append((prompt, colour, shape))
            k += 1
    return cases


def plain_prompts() -> list[tuple[str, str, str | None]]:
    """`prompts` with each synonym replaced by its basic colour word ("a red disc"): what the model
    does with colour words it was trained on, in the same templates and objects."""
    cases = []
    for prompt, colour, shape in prompts():
        synonym = max((s for s in SYNONYMS[colour] if s in prompt), key=len)
        plain = prompt.replace(synonym, colour)
        cases.append((_article(plain.split(" ", 1)[1]) if plain.startswith(("a ", "an ")) else plain, colour, shape))
    return cases


def held_out_prompts() -> list[tuple[str, str, str | None]]:
    """One prompt for every held-out name of the colour lexicon, the objects and templates in turn,
    asking for the basic colour of the name's RGB."""
    cases = []
    for k, c in enumerate(c for c in colour_lexicon() if c.held_out):
        word, shape = OBJECTS[k % len(OBJECTS)]
        template = TEMPLATES[k % len(TEMPLATES)]
        cases.append((template.format(co=_article(f"{c.name} {word}"), c=c.name, o=word), c.basic, shape))
    return cases


def lexicon_standing(prompt: str) -> str:
    """Where the longest lexicon name in ``prompt`` stands: "trained", "held out", or "not a name"."""
    found = [c for c in colour_lexicon() if f" {c.name} " in f" {prompt.replace(',', ' ')} "]
    if not found:
        return "not a name"
    return "held out" if max(found, key=lambda c: len(c.name)).held_out else "trained"


def head_reading(pipe, prompt: str) -> str | None:
    """The basic colour the model's colour head (models/colour_head.py) reads in ``prompt``; None
    for a model without one."""
    tau = getattr(pipe.parts.conditioner, "tau", None)
    if getattr(tau, "colour", None) is None:
        return None
    with torch.no_grad():
        return BASIC_COLOURS[int(tau.colour_logits(tau.inputs([prompt])).argmax())]


def colour_prompt_fidelity(model: str, n: int, colours: set[str] | None = None, plain: bool = False,
                           held_out: bool = False, colour_hint: bool = True, **options) -> dict:
    pipe = genpix.load_pipeline(model)
    if hasattr(pipe.parts.conditioner, "colour_hint"):  # pipelines/colour_hint.py
        pipe.parts.conditioner.colour_hint = colour_hint
    chosen = held_out_prompts() if held_out else plain_prompts() if plain else prompts()
    cases = [case for case in chosen if colours is None or case[1] in colours]
    hits, shape_hits, seconds, per_colour = 0, [0, 0], 0.0, defaultdict(lambda: [0, 0])
    by_standing: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    seen: dict[str, int] = defaultdict(int)
    by_head: dict[bool, list[int]] = defaultdict(lambda: [0, 0])  # head read the asked colour -> [hits, images]
    hinted = 0
    for k, (prompt, colour, shape) in enumerate(cases):
        tic = time.perf_counter()
        out = pipe(prompt=prompt, n=n, seed=1000 + k, **options)
        seconds += time.perf_counter() - tic
        hinted += "Colour hint: " in out.infotexts[0]
        standing = by_standing[lexicon_standing(prompt)]
        read = head_reading(pipe, prompt)
        for image in out.images:
            reading = read_picture(image, shapes=shape is not None)
            seen[reading.colour] += 1
            hits += reading.colour == colour
            per_colour[colour][0] += reading.colour == colour
            per_colour[colour][1] += 1
            standing[0], standing[1] = standing[0] + (reading.colour == colour), standing[1] + 1
            if read is not None:
                by_head[read == colour][0] += reading.colour == colour
                by_head[read == colour][1] += 1
            if shape is not None:
                shape_hits[0] += reading.shape == shape
                shape_hits[1] += 1
    total = n * len(cases)
    return {"model": model, "prompts": len(cases), "images": total, "options": options,
            "ms_per_image": 1000 * seconds / total, "colour": hits / total, "hinted_prompts": hinted,
            "shape": shape_hits[0] / max(shape_hits[1], 1), "shape_images": shape_hits[1],
            "per_colour": {c: h / t for c, (h, t) in per_colour.items()},
            "by_lexicon": {k: {"colour": h / t, "images": t} for k, (h, t) in by_standing.items()},
            "by_colour_head": {("head read it" if k else "head misread it"): {"colour": h / t, "images": t}
                               for k, (h, t) in by_head.items()},
            "colours_seen": dict(sorted(seen.items(), key=lambda item: -item[1]))}


def main() -> None:
    parser = sampling_parser(__doc__.splitlines()[0], n=4, n_help="images per prompt", cfg_scale=5.0)
    parser.add_argument("--colours", choices=("all", "shapes"), default="all",
                        help="shapes: only the prompts asking for a colour of the shapes dataset")
    parser.add_argument("--plain", action="store_true",
                        help="the basic colour word in place of each synonym (\"a red disc\"): the colour words "
                             "of training in the same prompts")
    parser.add_argument("--held-out", action="store_true",
                        help="one prompt for each colour name held out of the lexicon's training captions")
    parser.add_argument("--no-colour-hint", dest="colour_hint", action="store_false",
                        help="a model with a colour head: sample without the colour hint (pipelines/colour_hint.py)")
    args = parser.parse_args()
    set_cpu_threads()
    colours = set(SHAPES_COLOURS) if args.colours == "shapes" else None
    result = colour_prompt_fidelity(args.model, args.n, colours, args.plain, args.held_out, args.colour_hint,
                                    steps=args.steps, sampler=args.sampler, cfg_scale=args.cfg_scale)
    wording = "held-out-name" if args.held_out else "plain-colour" if args.plain else "reworded"
    print(f"{args.model}: {result['images']} images of {result['prompts']} {wording} prompts ({args.sampler}, "
          f"{args.steps} steps, CFG {args.cfg_scale}), {result['ms_per_image']:.0f} ms/image; asked colour "
          f"{result['colour']:.2f}, asked shape {result['shape']:.2f} ({result['shape_images']} images); colour "
          f"hint on {result['hinted_prompts']} prompts")
    print("per colour: " + ", ".join(f"{c} {v:.2f}" for c, v in result["per_colour"].items()))
    print("by lexicon: " + ", ".join(f"{k} {v['colour']:.2f} ({v['images']} images)"
                                     for k, v in result["by_lexicon"].items()))
    if result["by_colour_head"]:
        print("colour head: " + ", ".join(f"{k}: {v['colour']:.2f} ({v['images']} images)"
                                          for k, v in result["by_colour_head"].items()))
    print("colours seen: " + ", ".join(f"{c} {v}" for c, v in result["colours_seen"].items()))
    write_json(result, args.json)


if __name__ == "__main__":
    main()
