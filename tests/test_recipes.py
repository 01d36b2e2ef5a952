"""recipes/: every bundled model's recipe is what its bundle records, and the documented commands
(recipes/README.md) train, export and load, run here for 2 steps on 16 images."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

import genpix
from genpix.io.checkpoint import read_model_dir

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes"
BUNDLED = ROOT / "src" / "genpix" / "bundled"
BUNDLES = ("fashion-vae", "fashion-ddpm", "shapes-ldm", "fashion-ldm", "emoji-ldm")
STAGE_FILES = {"autoencoder": ".autoencoder", "preview-decoder": ".preview-decoder", "finetune": ".finetune",
               "colour-token": ".colour-token", "colour-head": ".colour-head"}  # else NAME.json
TUNING_STAGES = ("colour-head", "colour-token", "finetune")  # stages that start from the one before, the last first
QUICK = ("--steps", "2", "--limit", "16", "--batch-size", "4", "--sample-every", "2", "--checkpoint-every", "2",
         "--log-every", "1", "--quiet")
FROM_ELSEWHERE = {"image_size", "channels", "num_classes", "first_stage"}  # the data's and --autoencoder's


def readme_commands() -> dict[str, list[list[str]]]:
    """Each ``### NAME`` section's recipe lines (``genpix ...`` and ``python recipes/...`` in ```sh blocks)
    as argument lists, without VAR=value and comments; timing commands (python benchmarks/...) are left out."""
    sections: dict[str, list[list[str]]] = {}
    name, in_block = None, False
    for line in (RECIPES / "README.md").read_text(encoding="utf-8").splitlines():
        if line.startswith("### "):
            name = line[4:].strip()
            sections[name] = []
        elif line.startswith("```"):
            in_block = line.strip() == "```sh"
        elif in_block and name and line.strip():
            args = shlex.split(line, comments=True)
            while args and "=" in args[0]:
                args.pop(0)
            if args[:1] == ["genpix"] or args[1:2] and args[0] == "python" and args[1].startswith("recipes/"):
                sections[name].append(args)
    return sections


def recipe(name: str, stage: str) -> dict:
    return json.loads((RECIPES / f"{name}{STAGE_FILES.get(stage, '')}.json").read_text(encoding="utf-8"))


def test_readme_has_every_bundle_and_the_new_default():
    commands = readme_commands()
    assert set(BUNDLES) | {"emoji-ldm"} <= set(commands)
    for name, lines in commands.items():
        configs = [a[a.index("--config") + 1] for a in lines if "--config" in a]
        assert configs and all((ROOT / c).is_file() for c in configs), name


@pytest.mark.parametrize("name", BUNDLES)
def test_bundle_names_its_recipe_and_matches_it(name):
    """config.json's notes name the recipe and each stage's steps; the stage the bundle holds (its family's,
    or the last fine-tuning after it) was trained with exactly the recipe's model and train sections."""
    config = json.loads((BUNDLED / name / "config.json").read_text(encoding="utf-8"))
    assert config["notes"]["recipe"] == f"recipes/{name}.json"
    stages = config["notes"]["total_steps"]
    held = next((s for s in TUNING_STAGES if s in stages), config["family"])
    assert config["family"] in stages and stages[held] == config["step"]
    for stage, steps in stages.items():
        assert recipe(name, stage)["train"]["steps"] == steps, (name, stage)
    main = recipe(name, held)
    assert main["model"] == {k: v for k, v in config["model"].items() if k not in FROM_ELSEWHERE}
    assert main["train"] == config["train"]
    if "first_stage" in config["model"]:
        network = recipe(name, "autoencoder")["model"]
        assert all(network[k] == v for k, v in config["model"]["first_stage"].items() if k in network)


def _localise(args: list[str], tmp_path: Path) -> list[str]:
    """Output folders (runs/..., src/genpix/bundled/...) moved under tmp_path."""
    def move(arg: str) -> str:
        for prefix, to in (("runs/", tmp_path / "runs"), ("src/genpix/bundled/", tmp_path / "bundled")):
            if arg.startswith(prefix):
                return str(to / arg[len(prefix):])
        return str(ROOT / arg) if arg.startswith("recipes/") else arg
    return [move(a) for a in args]


def _needs_minilm(name: str) -> bool:
    return recipe(name, "main")["model"].get("text_encoder") == "minilm"


@pytest.mark.slow  # a fixed cost per run (held-out evaluation, preview sampling): about half a minute each
@pytest.mark.parametrize("name", BUNDLES)
def test_recipe_commands_train_export_and_load(name, tmp_path, run_cli):
    if _needs_minilm(name):
        pytest.importorskip("transformers")
    for args in readme_commands()[name]:
        args = _localise(args, tmp_path)
        if args[0] == "python":
            subprocess.run([sys.executable, *args[1:]], check=True, capture_output=True)
            continue
        assert args[0] == "genpix"
        extra = QUICK if args[1] == "train" else ()
        status, _, err = run_cli(*args[1:], *extra)
        assert status == 0, (args, err)
    bundle = tmp_path / "bundled" / name
    config = json.loads((bundle / "config.json").read_text(encoding="utf-8"))
    assert config["step"] == 2 and read_model_dir(bundle).weights
    wanted = recipe(name, config["family"])["model"]
    assert {k: config["model"][k] for k in wanted} == wanted  # the recipe reached the run
    pipe = genpix.load_pipeline(str(bundle))
    options = {"steps": 2} if config["family"] != "vae" else {}
    if config["model"].get("cond") == "text":
        options["prompt"] = "a red heart"
    assert len(pipe(n=1, seed=0, **options).images) == 1
