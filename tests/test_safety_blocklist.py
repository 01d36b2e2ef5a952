"""The prompt blocklist (pipelines/prompt_blocklist.py) and the pluggable safety checks
(pipelines/safety.py): matching rules on their own, then through the bundled text-to-image model
shapes-ldm with the Python API, `genpix generate` and the sd-webui API server. (The SD safety
checker behind the same interface is compared with diffusers in test_safety_checker.py.)"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import requests
import torch
from PIL import Image
from server_harness import ServerThread

import genpix
from genpix.errors import GenpixError
from genpix.pipelines.prompt_blocklist import (BLOCKLIST_ENV, BlocklistConfig, BlocklistError, PromptBlocklist,
                                               read_terms)
from genpix.pipelines.prompt_blocklist import default_checks
from genpix.pipelines.safety import CombinedCheck, SafetyCheck, black_out

CLEAN, BLOCKED = "a red circle at the top left", "a red nude circle at the top left"
FAST = ("-n", "2", "--steps", "2")  # shapes-ldm makes 32x32 pictures; 2 steps take a moment


def flagged(prompt: str, config: BlocklistConfig | None = None) -> bool:
    images = torch.rand(1, 3, 4, 4)
    out, flags = PromptBlocklist(config)(images, [prompt])
    assert torch.equal(out, torch.zeros_like(images) if flags[0] else images)
    return flags[0]


@pytest.mark.parametrize("prompt", ["a nude figure", "NUDE", "Naked  Lady", "porn", "a (nude:1.3) figure",
                                    "((naked)) statue", "[porn] star", "nu(de) art", "por[n]", "nsfw, 1girl",
                                    "nude_figure, beach", "a BREAK nude BREAK b", "(nude:25) out of range",
                                    "Ｎｕｄｅ (fullwidth)"])
def test_blocked_terms_are_found_through_case_and_weighting_syntax(prompt):
    assert flagged(prompt)


@pytest.mark.parametrize("prompt", ["a sussex landscape", "Essex county", "a sextant on a desk", "denuded hills",
                                    "snakedness", "a red circle", ""])
def test_terms_match_whole_words_only(prompt):
    """A blocked word inside a longer word is not the word (no Scunthorpe problem)."""
    assert not flagged(prompt)


def test_user_file_extends_the_defaults(tmp_path):
    path = tmp_path / "extra.txt"
    path.write_text("# my additions\n\nblue   square  # two words, any spacing\nGORE\n", encoding="utf-8")
    assert read_terms(path) == ("blue square", "GORE")
    config = BlocklistConfig.from_files(path)
    assert config.terms == BlocklistConfig().terms and config.extra_terms == ("blue square", "GORE")
    assert flagged("a Blue\tSquare", config) and flagged("gore", config) and flagged("nude", config)
    assert not flagged("blue squares", config) and not flagged("a blue circle", config)
    from_env = BlocklistConfig.from_files(None, {BLOCKLIST_ENV: str(path)})
    assert from_env.extra_terms == ("blue square", "GORE")
    both = tmp_path / "more.txt"
    both.write_text("triangle\n", encoding="utf-8")
    assert BlocklistConfig.from_files(both, {BLOCKLIST_ENV: str(path)}).extra_terms == ("blue square", "GORE",
                                                                                          "triangle")
    assert BlocklistConfig.from_files(None, {}).extra_terms == ()


def test_bad_blocklist_files_are_one_line_errors(tmp_path):
    (tmp_path / "latin1.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    (tmp_path / "syntax.txt").write_text("ok\n(word:1.2)\n", encoding="utf-8")
    for name, message in (("missing.txt", "no such file"), ("latin1.txt", "is not UTF-8 text"),
                          ("syntax.txt", "line 2: '(word:1.2)' holds prompt syntax"), (".", "is a folder")):
        with pytest.raises(BlocklistError, match=re.escape(message)) as error:
            read_terms(tmp_path / name)
        assert "\n" not in str(error.value)


def test_checks_combine_with_flags_ored():
    class Corner:
        """Flags the images whose top left pixel is bright; leaves the prompts alone."""

        name = "corner check"

        def __call__(self, images, prompts):
            flags = [bool(im[0, 0, 0] > 0.5) for im in images]
            return black_out(images, flags), flags

    images = torch.full((3, 3, 4, 4), 0.25)
    images[1, :, 0, 0] = 0.9
    assert isinstance(Corner(), SafetyCheck) and isinstance(PromptBlocklist(), SafetyCheck)
    combined = CombinedCheck([PromptBlocklist(), Corner()])
    result = combined.run(images, ["nude", "a circle", "a square"])
    assert result.flags == [True, True, False] and result.flagged_by == ("prompt blocklist", "corner check")
    assert result.images[:2].max() == 0 and torch.equal(result.images[2], images[2])
    assert combined(images[[0, 2]], ["a", "b"])[1] == [False, False]
    assert isinstance(combined, SafetyCheck)  # a combination is a check too
    with pytest.raises(TypeError, match="is not a safety check"):
        CombinedCheck([lambda images, prompts: (images, [False] * len(images))])
    assert default_checks(False) == ()
    with pytest.raises(GenpixError, match="no effect with the safety checks turned off"):
        default_checks(False, "terms.txt")


# --- the bundled text-to-image model ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def shapes():
    return genpix.load_pipeline("shapes-ldm")


def test_pipeline_blacks_out_a_blocked_prompt_and_ignores_the_negative_prompt(shapes, recwarn):
    out = shapes(prompt=BLOCKED, n=2, steps=2, seed=0)
    assert out.info["nsfw"] == [True, True] and out.tensors.max() == 0
    assert all(np.asarray(im).max() == 0 for im in out.images)
    [warning] = [w for w in recwarn if "NSFW" in str(w.message)]
    assert "2 of 2 images by the prompt blocklist" in str(warning.message)
    assert "nude" not in str(warning.message)  # the check is named, not the words
    recwarn.clear()
    out = shapes(prompt=CLEAN, negative_prompt="nude, naked, porn", n=1, steps=2, seed=0)
    assert out.info["nsfw"] == [False] and out.tensors.max() > 0.2
    assert not [w for w in recwarn if "NSFW" in str(w.message)]
    unchecked = genpix.load_pipeline("shapes-ldm", safety_checker=False)
    out = unchecked(prompt=BLOCKED, n=1, steps=2, seed=0)
    assert out.info["nsfw"] is None and out.tensors.max() > 0.2


def pngs(folder):
    return [np.asarray(Image.open(f).convert("RGB")) for f in sorted(folder.glob("*.png"))]


@pytest.mark.filterwarnings("always")  # one process, the same warning: show it each time
def test_generate_command(run_cli, tmp_path, monkeypatch):
    monkeypatch.delenv(BLOCKLIST_ENV, raising=False)
    status, _, err = run_cli("generate", BLOCKED, *FAST, "-o", tmp_path / "blocked")
    assert status == 0, err
    pictures = pngs(tmp_path / "blocked")
    assert len(pictures) == 2 and all(p.max() == 0 for p in pictures)
    assert "genpix: warning: potential NSFW content was detected in 2 of 2 images by the prompt blocklist" in err
    status, _, err = run_cli("generate", CLEAN, *FAST, "-o", tmp_path / "clean")
    assert status == 0 and "NSFW" not in err, err
    assert all(p.max() > 50 for p in pngs(tmp_path / "clean"))
    status, _, err = run_cli("generate", BLOCKED, *FAST, "--no-safety-checker", "-o", tmp_path / "off")
    assert status == 0 and "NSFW" not in err, err
    assert all(p.max() > 50 for p in pngs(tmp_path / "off"))

    terms = tmp_path / "terms.txt"
    terms.write_text("# shapes we do not want\ncircle\n", encoding="utf-8")
    status, _, err = run_cli("generate", CLEAN, "--steps", "2", "--blocklist", terms, "-o", tmp_path / "file")
    assert status == 0 and "by the prompt blocklist" in err, err
    assert pngs(tmp_path / "file")[0].max() == 0
    monkeypatch.setenv(BLOCKLIST_ENV, str(terms))
    status, _, err = run_cli("generate", CLEAN, "--steps", "2", "-o", tmp_path / "env")
    assert status == 0 and "by the prompt blocklist" in err, err
    assert pngs(tmp_path / "env")[0].max() == 0


@pytest.mark.parametrize("content, message", [
    (None, "blocklist {path}: no such file"),
    (b"\xff\xfeterm\n", "blocklist {path} is not UTF-8 text"),
    (b"fine\n[x]\n", "line 2: '[x]' holds prompt syntax"),
])
def test_bad_blocklist_file_through_the_command(content, message, run_cli, tmp_path, monkeypatch):
    monkeypatch.delenv(BLOCKLIST_ENV, raising=False)
    path = tmp_path / "terms.txt"
    if content is not None:
        path.write_bytes(content)
    status, out, err = run_cli("generate", CLEAN, "--steps", "2", "--blocklist", path, "-o", tmp_path / "o")
    lines = err.strip().splitlines()
    assert status == 1 and len(lines) == 1 and lines[0].startswith("genpix: error: "), err
    assert message.format(path=path) in lines[0] and not (tmp_path / "o").exists()
    status, _, err = run_cli("generate", CLEAN, "--blocklist", path, "--no-safety-checker")
    assert status == 1 and "no effect with the safety checks turned off" in err
    monkeypatch.setenv(BLOCKLIST_ENV, str(path))  # the same file named by the environment
    status, _, err = run_cli("generate", CLEAN, "--steps", "2", "-o", tmp_path / "o")
    assert status == 1 and message.format(path=path) in err and err.count("\n") == 1


@pytest.mark.filterwarnings("always")  # one process, the same warning: show it each time
def test_img2img_and_inpaint_commands_check_the_prompt_too(run_cli, tmp_path, monkeypatch):
    monkeypatch.delenv(BLOCKLIST_ENV, raising=False)
    picture = np.random.default_rng(0).integers(0, 255, (32, 32, 3), np.uint8)
    Image.fromarray(picture).save(tmp_path / "in.png")
    mask = np.zeros((32, 32), np.uint8)
    mask[:, 16:] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    for command in (("img2img", tmp_path / "in.png", BLOCKED, "--model", "shapes-ldm"),
                    ("inpaint", tmp_path / "in.png", tmp_path / "mask.png", BLOCKED, "--model", "shapes-ldm"),
                    ("outpaint", tmp_path / "in.png", BLOCKED, "--right", "8", "--model", "shapes-ldm")):
        out = tmp_path / command[0]
        status, _, err = run_cli(*command, "--steps", "2", "-o", out)
        assert status == 0 and "by the prompt blocklist" in err, err
        [got] = pngs(out)
        assert got.max() == 0, command[0]  # black all over: the picture is not pasted back around it


# --- the sd-webui API ---------------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:potential NSFW content")  # the server's log; the answer is checked
def test_server_txt2img_and_img2img_black_out_a_blocked_prompt(monkeypatch):
    import base64
    import io

    from genpix.server import create_app

    monkeypatch.delenv(BLOCKLIST_ENV, raising=False)

    def decode(text):
        return np.asarray(Image.open(io.BytesIO(base64.b64decode(text))).convert("RGB"))

    buffer = io.BytesIO()
    Image.fromarray(np.full((32, 32, 3), 128, np.uint8)).save(buffer, format="PNG")
    init = base64.b64encode(buffer.getvalue()).decode()
    with ServerThread(create_app(model="shapes-ldm")) as url:
        body = {"steps": 2, "width": 32, "height": 32, "batch_size": 2, "seed": 1}
        blocked = requests.post(f"{url}/sdapi/v1/txt2img", json={**body, "prompt": BLOCKED}, timeout=120)
        clean = requests.post(f"{url}/sdapi/v1/txt2img", json={**body, "prompt": CLEAN,
                                                              "negative_prompt": "nude"}, timeout=120)
        img2img = requests.post(f"{url}/sdapi/v1/img2img", json={**body, "prompt": BLOCKED, "init_images": [init],
                                                                "denoising_strength": 0.5}, timeout=120)
    for response in (blocked, clean, img2img):
        assert response.status_code == 200, response.text
    assert json.loads(blocked.json()["info"])["nsfw"] == [True, True]
    assert all(decode(im).max() == 0 for im in blocked.json()["images"])
    assert json.loads(clean.json()["info"])["nsfw"] == [False, False]
    assert all(decode(im).max() > 50 for im in clean.json()["images"])
    assert json.loads(img2img.json()["info"])["nsfw"] == [True, True]
    assert all(decode(im).max() == 0 for im in img2img.json()["images"])


@pytest.mark.filterwarnings("ignore:potential NSFW content")
def test_server_blocklist_file_extends_the_text_models_checks_only(monkeypatch, tmp_path, run_cli):
    """`genpix serve --blocklist FILE`: the text-to-image models flag its terms; the other models load as before."""
    import base64
    import io

    from genpix.pipelines.prompt_blocklist import BlocklistError
    from genpix.server import create_app

    monkeypatch.delenv(BLOCKLIST_ENV, raising=False)
    terms = tmp_path / "terms.txt"
    terms.write_text("# site rules\ngiraffe\n", encoding="utf-8")
    with ServerThread(create_app(model="shapes-ldm", blocklist=terms)) as url:
        body = {"steps": 2, "width": 32, "height": 32, "batch_size": 1, "seed": 1}
        flagged = requests.post(f"{url}/sdapi/v1/txt2img", json={**body, "prompt": "a red giraffe"}, timeout=120)
        pixel_model = requests.post(f"{url}/sdapi/v1/txt2img", json={"steps": 2, "prompt": "",
                                    "override_settings": {"sd_model_checkpoint": "fashion-ddpm"}}, timeout=120)
    assert flagged.status_code == 200 and pixel_model.status_code == 200, (flagged.text, pixel_model.text)
    assert json.loads(flagged.json()["info"])["nsfw"] == [True]
    image = np.asarray(Image.open(io.BytesIO(base64.b64decode(flagged.json()["images"][0]))))
    assert image.max() == 0
    with pytest.raises(BlocklistError, match="no such file"):
        create_app(blocklist=tmp_path / "missing.txt")
    status, _, err = run_cli("serve", "--blocklist", tmp_path / "missing.txt", "--port", "7999")
    assert status == 1 and err.strip().count("\n") == 0 and "no such file" in err
