"""The colour token (models/colour_head.py): the head reads a colour from the token states, its token
joins the U-Net's context, it learns only from its cross-entropy, and `genpix train ldm --colour-token`
trains it, adds it to a model fine-tuned from one without it, and samples with it."""

import json

import pytest
import torch
from safetensors.torch import load_file
from test_train_ldm import AE, DATA, LDM, SAMPLE

import genpix
from genpix.data.colour_names import BASIC_COLOURS
from genpix.models.colour_head import HIDE_ATTENTION, ColourHead, ColourHeadConfig

SHAPES = ["--data", "shapes", "--image-size", "16", "--limit", "64", "--batch-size", "8", "--quiet", "--device", "cpu"]


def test_the_token_is_appended_and_detached_from_the_head():
    torch.manual_seed(0)
    head = ColourHead(ColourHeadConfig(dim=16, hidden=8, score_hidden=4)).eval()  # no dropout
    tokens = torch.randn(3, 5, 16)
    context = head(tokens)
    assert context.shape == (3, 6, 16) and torch.equal(context[:, :5], tokens)
    logits = head.logits(tokens)
    assert logits.shape == (3, len(BASIC_COLOURS))
    p = logits.softmax(-1)
    assert torch.allclose(context[:, 5], p @ head.embedding.weight.T + head.embedding.bias, atol=1e-6)
    context.square().sum().backward()  # what the diffusion loss does: reaches E, not the classifier
    assert head.embedding.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in (*head.classifier.parameters(), *head.score.parameters()))


def test_colour_word_dropout_hides_the_attended_tokens_of_the_chosen_rows():
    torch.manual_seed(0)
    head = ColourHead(ColourHeadConfig(dim=16, hidden=8, score_hidden=4)).eval()
    with torch.no_grad():
        head.score[2].weight.mul_(40)  # sharp attention: a few tokens carry it
    tokens = torch.randn(4, 6, 16)
    hide = torch.tensor([True, False, True, False])
    context = head(tokens, hide)
    attended = head.attention(tokens)[1].squeeze(-1) >= HIDE_ATTENTION
    assert attended.any(1).all() and not attended.all(1).any()
    for row in range(4):
        kept = ~attended[row] if hide[row] else torch.ones(6, dtype=torch.bool)
        assert torch.equal(context[row, :6][kept], tokens[row][kept])
        assert (context[row, :6][~kept] == 0).all()
    assert torch.equal(context[:, 6], head(tokens)[:, 6])  # the colour token reads every word


def test_the_head_learns_which_token_names_the_colour():
    """Token states where one random position carries a colour's vector among noise: pooling must
    find it (a mean over 12 noisy tokens drowns it)."""
    torch.manual_seed(0)
    colours = torch.randn(len(BASIC_COLOURS), 32) * 3

    def batch(n):
        y = torch.randint(len(BASIC_COLOURS), (n,))
        tokens = torch.randn(n, 12, 32)
        tokens[torch.arange(n), torch.randint(12, (n,))] = colours[y] + 0.3 * torch.randn(n, 32)
        return tokens, y

    head = ColourHead(ColourHeadConfig(dim=32, dropout=0.0))
    optimizer = torch.optim.AdamW(head.parameters(), 3e-3)
    for _ in range(300):
        tokens, y = batch(64)
        loss = torch.nn.functional.cross_entropy(head.logits(tokens), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    tokens, y = batch(512)
    with torch.no_grad():
        assert (head.logits(tokens).argmax(1) == y).float().mean() > 0.9


@pytest.fixture(scope="module")
def shapes_runs(tmp_path_factory):
    from genpix.cli import main

    root = tmp_path_factory.mktemp("colour")
    shapes_ae = [*SHAPES, *AE[len(DATA):]]
    assert main(["train", "autoencoder", *shapes_ae, "--steps", "4", "--sample-every", "4",
                 "--out", str(root / "ae")]) == 0
    assert main(["train", "ldm", *SHAPES, *LDM[len(DATA):], "--autoencoder", str(root / "ae"), "--steps", "2",
                 "--out", str(root / "plain")]) == 0
    return root


def test_colour_token_trains_reports_its_accuracy_and_samples(shapes_runs, tmp_path, run_cli):
    out = tmp_path / "coloured"
    status, stdout, err = run_cli("train", "ldm", *SHAPES, *LDM[len(DATA):], "--autoencoder", shapes_runs / "ae",
                                  "--colour-token", "--steps", "3", "--sample-every", "3", "--log-every", "1",
                                  "--out", out)
    assert status == 0, err
    logged = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    steps = [r for r in logged if "loss" in r]
    assert steps and all(0 < r["colour_loss"] < 10 for r in steps)  # the head's cross-entropy, logged
    assert json.loads((out / "config.json").read_text())["model"]["colour_token"] is True
    assert 0 <= json.loads((out / "config.json").read_text())["metrics"]["colour_head_accuracy"] <= 1
    weights = load_file(out / "model.safetensors")
    assert weights["ema.conditioner.colour.embedding.weight"].shape == (32, len(BASIC_COLOURS))
    pipe = genpix.load_pipeline(str(out))
    a, b = (pipe(prompt=p, cfg_scale=5, **SAMPLE).tensors for p in ("a red circle", "a blue circle"))
    assert (a - b).abs().max() > 1e-3


def test_the_head_is_trained_by_its_loss_alone(shapes_runs, tmp_path, run_cli):
    """The same run with colour_loss_weight 0 and 1: the cross-entropy moves the classifier."""
    moved = {}
    for weight in ("0", "1"):
        out = tmp_path / weight
        status, _, err = run_cli("train", "ldm", *SHAPES, *LDM[len(DATA):], "--autoencoder", shapes_runs / "ae",
                                 "--colour-token", "--colour-loss-weight", weight, "--steps", "2",
                                 "--warmup-steps", "0", "--ema-decay", "0", "--out", out)
        assert status == 0, err
        moved[weight] = load_file(out / "model.safetensors")["model.conditioner.colour.classifier.4.weight"]
    assert not torch.equal(moved["0"], moved["1"])  # the same seed, so the same fresh head before the steps


def test_fine_tuning_a_model_without_the_head_adds_a_fresh_one(shapes_runs, tmp_path, run_cli):
    out = tmp_path / "tuned"
    status, _, err = run_cli("train", "ldm", *SHAPES, "--init-from", shapes_runs / "plain", "--colour-token",
                             "--steps", "1", "--lr", "1e-12", "--warmup-steps", "0", "--out", out)
    assert status == 0, err
    tuned, source = load_file(out / "model.safetensors"), load_file(shapes_runs / "plain" / "model.safetensors")
    for key, value in tuned.items():
        role, rest = key.split(".", 1)
        if role == "model" and not rest.startswith("conditioner.colour."):
            assert torch.allclose(value, source[f"ema.{rest}"], rtol=0, atol=1e-9), key
    assert "model.conditioner.colour.embedding.bias" in tuned


@pytest.mark.parametrize("args, message", [
    (["--cond", "class", "--colour-token"], "colour_token needs --cond text"),
    (["--colour-word-dropout", "0.3"], "colour_word_dropout needs --colour-token"),
    (["--colour-token", "--colour-word-dropout", "1"], "colour_word_dropout must be in [0, 1), got 1"),
    (["--colour-head-only"], "colour_head_only needs --colour-token"),
])
def test_bad_colour_options_are_one_line(shapes_runs, tmp_path, run_cli, args, message):
    status, _, err = run_cli("train", "ldm", *SHAPES, *LDM[len(DATA):], "--autoencoder", shapes_runs / "ae",
                             *args, "--steps", "1", "--out", tmp_path / "run")
    assert status == 1 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "run").exists()


def test_colour_head_only_needs_a_trained_model(shapes_runs, tmp_path, run_cli):
    status, _, err = run_cli("train", "ldm", *SHAPES, *LDM[len(DATA):], "--autoencoder", shapes_runs / "ae",
                             "--colour-token", "--colour-head-only", "--steps", "1", "--out", tmp_path / "run")
    errors = [line for line in err.strip().splitlines() if "error" in line]
    assert status == 1 and len(errors) == 1 and "colour_head_only trains the colour head of a trained model: give " \
        "--init-from" in errors[0], err
    assert not (tmp_path / "run").exists()


def test_colour_word_dropout_trains_and_changes_the_steps(shapes_runs, tmp_path, run_cli):
    weights = {}
    for share in ("0", "0.5"):
        out = tmp_path / share
        status, _, err = run_cli("train", "ldm", *SHAPES, *LDM[len(DATA):], "--autoencoder", shapes_runs / "ae",
                                 "--colour-token", "--colour-word-dropout", share, "--steps", "2", "--out", out)
        assert status == 0, err
        weights[share] = load_file(out / "model.safetensors")["model.unet.conv_in.weight"]
    assert not torch.equal(weights["0"], weights["0.5"])


def test_colour_head_only_trains_the_reading_and_nothing_else(shapes_runs, tmp_path, run_cli):
    """--colour-head-only from a model with the head: the loss is the head's cross-entropy; the U-Net,
    the text encoder and the token embedding E come out as they went in, the reading moves."""
    source, out = tmp_path / "coloured", tmp_path / "head"
    status, _, err = run_cli("train", "ldm", *SHAPES, *LDM[len(DATA):], "--autoencoder", shapes_runs / "ae",
                             "--colour-token", "--steps", "2", "--out", source)
    assert status == 0, err
    status, _, err = run_cli("train", "ldm", *SHAPES, "--init-from", source, "--colour-head-only", "--steps", "3",
                             "--lr", "1e-2", "--warmup-steps", "0", "--log-every", "1", "--out", out)
    assert status == 0, err
    steps = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines() if '"loss"' in line]
    assert len(steps) == 3 and all(r["loss"] == pytest.approx(r["colour_loss"]) for r in steps)
    tuned, before = load_file(out / "model.safetensors"), load_file(source / "model.safetensors")
    reading = ("conditioner.colour.norm.", "conditioner.colour.score.", "conditioner.colour.classifier.")
    moved = set()
    for key, value in tuned.items():
        role, rest = key.split(".", 1)
        if role not in ("model", "ema"):
            continue
        if not rest.startswith(reading):
            assert torch.equal(value, before[f"ema.{rest}"]), key
        elif not torch.equal(value, before[f"ema.{rest}"]):
            moved.add(rest)
    assert "conditioner.colour.classifier.4.weight" in moved
    status, _, err = run_cli("train", "ldm", *SHAPES, "--init-from", out, "--steps", "1", "--out", tmp_path / "all")
    assert status == 0, err  # fine-tuning from it trains the whole model again
    assert json.loads((tmp_path / "all" / "config.json").read_text())["model"]["colour_head_only"] is False


def test_the_colour_gate_knows_the_colour_names():
    from genpix.data.colour_lexicon import colour_lexicon
    from genpix.pipelines.colour_hint import names_a_colour

    long = next(c.name for c in colour_lexicon() if len(c.name.split()) >= 2 and
                not any(w in BASIC_COLOURS for w in c.name.split()) and not names_a_colour(c.name.split()[0]))
    held = next(c.name for c in colour_lexicon() if c.held_out and " " not in c.name)
    assert names_a_colour(f"a {long} frog") and names_a_colour(f"a {held} frog")
    assert names_a_colour("a snow-white Disc") and names_a_colour("RED")
    assert not names_a_colour(f"a {long.split()[0]} frog")  # part of a name is not the name
    assert not names_a_colour("a frog") and not names_a_colour("") and not names_a_colour("blurry, ugly")
    assert not names_a_colour("a redhead")


def test_the_colour_hint_appends_what_the_head_reads(shapes_runs, tmp_path, run_cli):
    """A prompt naming a colour is encoded with the head's reading appended; others, and the negative
    prompt, as they are; the reading is in the infotext."""
    out = tmp_path / "hinted"
    status, _, err = run_cli("train", "ldm", *SHAPES, *LDM[len(DATA):], "--autoencoder", shapes_runs / "ae",
                             "--colour-token", "--steps", "1", "--out", out)
    assert status == 0, err
    pipe = genpix.load_pipeline(str(out))
    conditioner, tau = pipe.parts.conditioner, pipe.parts.conditioner.tau
    with torch.no_grad():
        read = BASIC_COLOURS[int(tau.colour_logits(tau.inputs(["a crimson circle"])).argmax())]
        cond, uncond, notes = conditioner.encode_pair("a crimson circle", "a red square")
        assert notes == {"Colour hint": read}
        assert torch.equal(cond["context"], tau(tau.inputs([f"a crimson circle, {read}"])))
        assert torch.equal(pipe.encode_prompt("a crimson circle"), cond["context"])  # prompt interpolation's
        assert torch.equal(uncond["context"], tau(tau.inputs(["a red square"])))
        assert conditioner.encode_pair("a circle", "")[2] == {"Colour hint": None}
        conditioner.colour_hint = False
        plain, _, notes = conditioner.encode_pair("a crimson circle", "")
        assert notes == {"Colour hint": None} and torch.equal(plain["context"], tau(tau.inputs(["a crimson circle"])))
        conditioner.colour_hint = True
    infotext = pipe(prompt="a crimson circle", cfg_scale=5, **SAMPLE).infotexts[0]
    assert f"Colour hint: {read}" in infotext
    assert "Colour hint" not in pipe(prompt="a circle", cfg_scale=5, **SAMPLE).infotexts[0]
