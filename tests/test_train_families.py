"""The family registry of `genpix train` (training/families.py): flags derived from each config's fields,
and a new family registered with one line training end to end."""

import dataclasses
import json
import typing

import pytest

from genpix.errors import GenpixError
from genpix.training import families as registry
from genpix.training.families import SET_FROM_DATA, families, get_family
from genpix.training.flags import Flag, config_flags


def subparser(family: str):
    from genpix.cli import build_parser

    train = next(a for a in build_parser()._subparsers._group_actions if "train" in a.choices).choices["train"]
    return next(a for a in train._subparsers._group_actions).choices[family]


def test_every_family_of_the_issue_is_registered_under_its_own_name():
    assert list(families())[:5] == ["vae", "ddpm", "gan", "autoencoder", "ldm"]
    assert all(f.name == name and f.task.family == name for name, f in families().items())


def test_every_family_writes_model_folders_io_can_read():
    from genpix.io.checkpoint import FAMILIES

    assert set(families()) <= set(FAMILIES)


@pytest.mark.parametrize("name", list(registry.FAMILY_MODULES))
def test_flags_are_the_config_fields_with_their_types_choices_and_defaults(name):
    family = get_family(name)
    parser = subparser(name)
    actions = {a.dest: a for a in parser._actions}
    hints = typing.get_type_hints(family.config)
    for field in dataclasses.fields(family.config):
        if field.name in SET_FROM_DATA or field.name in family.hidden:
            assert field.name not in actions or field.name in ("image_size", "channels")
            continue
        action = actions[field.name]
        option = "--" + field.name.replace("_", "-")
        flags = [option, option.replace("--", "--no-")] if hints[field.name] is bool else [option]
        assert action.option_strings == flags and action.default is None
        kind = hints[field.name]
        if typing.get_origin(kind) is typing.Literal:
            assert tuple(action.choices) == typing.get_args(kind)
        if field.default not in (None, dataclasses.MISSING) and not isinstance(field.default, tuple):
            shown = f"{field.default:g}" if isinstance(field.default, float) else str(field.default)
            shown = ("on" if field.default else "off") if isinstance(field.default, bool) else shown
            assert f"(default {shown})" in action.help, (field.name, action.help)
    assert f"(default {family.default_lr:g})" in actions["lr"].help
    for option in family.options:
        assert option.name in actions


def test_parsed_values_have_the_config_types():
    args = subparser("autoencoder").parse_args(["--block-out-channels", "8,16", "--kl-weight", "1e-5",
                                                "--reconstruction", "l2", "--disc-start", "3"])
    assert (args.block_out_channels, args.kl_weight, args.reconstruction, args.disc_start) == ((8, 16), 1e-5, "l2", 3)
    assert args.latent_channels is None and args.steps is None  # left out: the config's (or the run's) value
    with pytest.raises(SystemExit):
        subparser("autoencoder").parse_args(["--reconstruction", "l3"])


def test_family_train_defaults_apply_where_the_flags_leave_them():
    ddpm, vae = get_family("ddpm"), get_family("vae")
    assert ddpm.train_values() == {"lr": 1e-3, "warmup_steps": 100, "lr_schedule": "cosine"}
    assert vae.train_values() == {"lr": 1e-3}


def test_a_field_without_a_command_line_form_must_be_hidden():
    @dataclasses.dataclass(frozen=True)
    class Nested:
        inner: dict = dataclasses.field(default_factory=dict)

    with pytest.raises(GenpixError, match="list it as hidden"):
        import argparse

        config_flags(Nested)[0].add_to(argparse.ArgumentParser())
    with pytest.raises(GenpixError, match="has no field 'colour'"):
        config_flags(Nested, {"colour": "x"})


def test_bool_flags_are_on_and_off_switches():
    import argparse

    parser = argparse.ArgumentParser()
    Flag("centred", bool, "subtract the mean").add_to(parser)
    assert parser.parse_args([]).centred is None
    assert parser.parse_args(["--centred"]).centred is True and parser.parse_args(["--no-centred"]).centred is False


def test_unknown_family_names_the_registered_ones():
    with pytest.raises(GenpixError, match="unknown family 'flow'; choose one of: vae, ddpm, gan"):
        get_family("flow")


def test_a_new_family_registers_with_one_line_and_trains(monkeypatch, run_cli, tmp_path):
    from genpix.io import checkpoint

    monkeypatch.setitem(registry.FAMILY_MODULES, "toy", "toy_family")  # the one line a new family adds
    monkeypatch.setattr(checkpoint, "FAMILIES", (*checkpoint.FAMILIES, "toy"))  # and its model folders' name
    status, out, err = run_cli("train", "toy", "--help")
    assert status == 0 and "--centred, --no-centred" in out and "{l1,l2}" in out and "target scale" in out
    status, out, err = run_cli("train", "toy", "--data", "digits", "--image-size", "8", "--limit", "16",
                               "--batch-size", "8", "--steps", "3", "--scale", "0.5", "--loss", "l1", "--centred",
                               "--widths", "2,3", "--tag", "hello", "--quiet", "--device", "cpu",
                               "--out", tmp_path / "toy")
    assert status == 0, err
    config = json.loads((tmp_path / "toy" / "config.json").read_text())
    assert config["family"] == "toy" and config["train"]["lr"] == 0.5 and config["train"]["steps"] == 3
    assert config["model"] == {"image_size": 8, "channels": 1, "loss": "l1", "centred": True, "scale": 0.5,
                               "widths": [2, 3]}
    assert "tag: hello" in out
    status, _, err = run_cli("train", "toy", "--out", tmp_path / "toy", "--resume", "--scale", "2", "--quiet")
    assert status == 1 and "--resume: --scale 2.0 differs from the run's 0.5" in err
