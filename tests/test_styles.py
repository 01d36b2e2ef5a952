"""styles.csv against sd-webui's modules/styles.py, whose reading and merging are written here
from its source (csv.DictReader with skipinitialspace, merge_prompts, apply_styles_to_prompt)."""

import csv

import pytest

from genpix.errors import GenpixError
from genpix.io.styles import (PromptStyle, apply_styles, extract_styles, parse_styles, read_styles,
                              write_styles)


def webui_read(path):
    styles = {}
    with open(path, "r", encoding="utf-8-sig", newline="") as file:
        for row in csv.DictReader(file, skipinitialspace=True):
            if not row or row["name"].startswith("#"):
                continue
            prompt = row["prompt"] if "prompt" in row else row["text"]
            styles[row["name"]] = (prompt, row.get("negative_prompt", ""))
    return styles


def webui_merge(style_prompt, prompt):
    if "{prompt}" in style_prompt:
        return style_prompt.replace("{prompt}", prompt)
    return ", ".join(filter(None, (prompt.strip(), style_prompt.strip())))


def webui_apply(prompt, style_prompts):
    for style in style_prompts:
        prompt = webui_merge(style, prompt)
    return prompt


STYLES_CSV = ('\ufeffname,prompt,negative_prompt\n'
              'cinematic,"cinematic still {prompt}, film grain","cartoon, {prompt}"\n'
              'oil, oil painting, blurry\n'
              '# disabled,nothing,nothing\n'
              '\n'
              'empty,,\n'
              'wrap,"best, {prompt}",\n'
              '"quoted, name","  trailing  ",  ugly  \n')


@pytest.fixture
def styles_file(tmp_path):
    path = tmp_path / "styles.csv"
    path.write_text(STYLES_CSV, encoding="utf-8")
    return path


@pytest.mark.parametrize("names", [["cinematic"], ["oil"], ["oil", "cinematic"], ["cinematic", "oil", "wrap"],
                                   ["empty"], ["quoted, name", "wrap"], []])
@pytest.mark.parametrize("prompt, negative", [("a cat", "lowres"), ("  a dog  ", ""), ("", "")])
def test_styles_apply_as_sd_webui(styles_file, names, prompt, negative):
    ours = read_styles(styles_file)
    theirs = webui_read(styles_file)
    assert {n: (s.prompt, s.negative_prompt) for n, s in ours.items()} == theirs
    expected = (webui_apply(prompt, [theirs[n][0] for n in names]),
                webui_apply(negative, [theirs[n][1] for n in names]))
    assert apply_styles(prompt, negative, names, ours) == expected


def test_examples_from_the_placeholder_rules(styles_file):
    styles = read_styles(styles_file)
    assert apply_styles("a cat", "lowres", ["cinematic"], styles) == (
        "cinematic still a cat, film grain", "cartoon, lowres")
    assert apply_styles("a cat", "", ["oil"], styles) == ("a cat, oil painting", "blurry")


def test_write_read_round_trip_and_old_text_header(tmp_path):
    styles = [PromptStyle("a", 'say "hi", {prompt}', "x, y"), PromptStyle("b", "multi\nline", "")]
    path = write_styles(tmp_path / "out" / "styles.csv", styles)
    assert path.read_bytes().startswith(b"\xef\xbb\xbf")
    assert list(read_styles(path).values()) == styles
    assert list(webui_read(path)) == ["a", "b"]  # sd-webui reads what genpix writes
    old = tmp_path / "old.csv"
    old.write_text("name,text\nsharp,sharp focus\n", encoding="utf-8")
    assert read_styles(old) == {"sharp": PromptStyle("sharp", "sharp focus", "")}


def test_extract_undoes_apply(styles_file):
    styles = read_styles(styles_file)
    prompt, negative = apply_styles("a cat", "lowres", ["oil", "cinematic"], styles)
    assert extract_styles(prompt, negative, styles) == (["oil", "cinematic"], "a cat", "lowres")
    assert extract_styles("a cat", "", styles) == ([], "a cat", "")


@pytest.mark.parametrize("text, message", [
    ("title,body\nx,y\n", "header must name"),
    ("name,prompt,negative_prompt\nbad,a, b, c, d\n", "line 2: 5 fields"),
    ("name,prompt,negative_prompt\n,orphan,\n", "line 2: a style without a name"),
])
def test_bad_files_are_one_line_errors(text, message):
    with pytest.raises(GenpixError, match=message):
        parse_styles(text)


def test_unknown_style_names_the_known_ones(styles_file):
    with pytest.raises(GenpixError, match="unknown style 'nope'; the styles are: cinematic, oil"):
        apply_styles("a", "", ["nope"], read_styles(styles_file))
    assert read_styles(styles_file.parent / "missing.csv") == {}
