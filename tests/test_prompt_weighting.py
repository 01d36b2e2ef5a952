"""sd-webui's emphasis parser (pipelines/prompt_weighting.py) against the examples in the docstring
of sd-webui's parse_prompt_attention (modules/prompt_parser.py), written out here, plus BREAK,
escapes and genpix's sane-range check."""

from __future__ import annotations

import pytest

from genpix.errors import GenpixError
from genpix.pipelines.prompt_weighting import MAX_WEIGHT, PromptWeightError, parse_prompt_attention

# sd-webui's doctest examples, input -> expected output, verbatim (its lists as tuples)
SD_WEBUI_EXAMPLES = [
    ("normal text", [("normal text", 1.0)]),
    ("an (important) word", [("an ", 1.0), ("important", 1.1), (" word", 1.0)]),
    ("(unbalanced", [("unbalanced", 1.1)]),
    ("\\(literal\\]", [("(literal]", 1.0)]),
    ("(unnecessary)(parens)", [("unnecessaryparens", 1.1)]),
    ("a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
     [("a ", 1.0), ("house", 1.5730000000000004), (" ", 1.1), ("on", 1.0), (" a ", 1.1), ("hill", 0.55),
      (", sun, ", 1.1), ("sky", 1.4641000000000006), (".", 1.1)]),
]


@pytest.mark.parametrize("prompt, expected", SD_WEBUI_EXAMPLES)
def test_sd_webui_docstring_examples(prompt, expected):
    """Exact floats: the multiplications happen in sd-webui's order."""
    assert parse_prompt_attention(prompt) == expected


@pytest.mark.parametrize("prompt, expected", [
    ("(word:1.2)", [("word", 1.2)]),
    ("(word: 1.2 )", [("word", 1.2)]),  # spaces around the number, as the current re_attention allows
    ("((word))", [("word", 1.1 * 1.1)]),
    ("[word]", [("word", 1 / 1.1)]),
    ("[[word]]", [("word", 1 / 1.1 / 1.1)]),
    ("a (b:-1) c", [("a ", 1.0), ("b", -1.0), (" c", 1.0)]),
    ("\\(not\\) \\\\ weighted", [("(not) \\ weighted", 1.0)]),
    ("a) b]", [("a) b]", 1.0)]),  # stray closers are text
    ("a: b", [("a: b", 1.0)]),  # a colon outside a weight is text
    ("", [("", 1.0)]),
    ("one BREAK two", [("one", 1.0), ("BREAK", -1.0), ("two", 1.0)]),
    ("(one BREAK two)", [("one", 1.1), ("BREAK", -1.1), ("two", 1.1)]),  # as sd-webui: the marker is scaled too
    ("BREAKfast", [("BREAKfast", 1.0)]),  # only the word on its own
])
def test_weights_escapes_and_break(prompt, expected):
    assert parse_prompt_attention(prompt) == [(t, pytest.approx(w, rel=1e-12)) for t, w in expected]


@pytest.mark.parametrize("prompt, message", [
    ("(word:12)", r"prompt weight 12 of 'word' is outside the sane range \[-10, 10\]"),
    ("(word:-10.5)", r"prompt weight -10.5 of 'word' is outside the sane range"),
    ("((((word:9))))", r"prompt weight 11.979 of 'word' is outside"),  # 9 * 1.1^3
    ("(a:1.2.3)", r"prompt weight '1.2.3' is not a number"),
])
def test_weights_beyond_the_sane_range_are_one_line_errors(prompt, message):
    with pytest.raises(PromptWeightError, match=message) as info:
        parse_prompt_attention(prompt)
    assert isinstance(info.value, GenpixError) and "\n" not in str(info.value)


def test_the_range_bounds_are_allowed():
    assert parse_prompt_attention(f"(a:{MAX_WEIGHT:g}) (b:-{MAX_WEIGHT:g})") == \
        [("a", MAX_WEIGHT), (" ", 1.0), ("b", -MAX_WEIGHT)]
