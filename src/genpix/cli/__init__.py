"""The ``genpix`` command: a thin layer over the Python API.

Every user-facing problem is one line on stderr and a non-zero exit (1; 2 for bad arguments).
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings

from genpix.cli import (bench, evaluate, export, generate, img2img, info, inpaint, report, serve, text_to_image,
                        train)
from genpix.cli import upscale, xyz
from genpix.errors import GenpixError
from genpix.version import __version__


class Parser(argparse.ArgumentParser):
    """argparse whose errors are one line: 'genpix: error: ...' and exit status 2."""

    def error(self, message: str):  # noqa: D102
        self.exit(2, f"genpix: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="genpix", description="Train and run image generators, offline.")
    parser.add_argument("--version", action="version", version=f"genpix {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    commands.required = True
    for module in (train, generate, text_to_image, img2img, inpaint, info, evaluate, serve, bench, export, report):
        module.register(commands)
    upscale.register(commands)  # genpix upscale: sd-webui's Extras
    xyz.register(commands)  # genpix xyz: sd-webui's X/Y/Z plot
    return parser


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"genpix: warning: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = [str(a) for a in (sys.argv[1:] if argv is None else argv)]  # for `train --nproc`
    shown = warnings.showwarning
    warnings.showwarning = _show_warning  # one line each, never a source excerpt
    try:
        return args.run(args) or 0
    except BrokenPipeError:  # the reader went away (`genpix samplers | head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (GenpixError, ValueError, OSError) as error:
        # GenpixError covers the data layer, configs and checkpoints; ValueError/OSError from
        # our own validation carry readable messages; a bug elsewhere keeps its traceback.
        if not isinstance(error, GenpixError) and not _is_user_error(error):
            raise
        print(f"genpix: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("genpix: interrupted", file=sys.stderr)
        return 130
    finally:
        warnings.showwarning = shown


def _is_user_error(error: BaseException) -> bool:
    from genpix.data import DataError

    return isinstance(error, (DataError, FileNotFoundError, PermissionError, IsADirectoryError, FileExistsError,
                              NotADirectoryError))
