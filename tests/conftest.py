import os
from pathlib import Path

import pytest
import torch
from tiny_ddpm import tiny_ddpm_run

# Two cores: one torch thread per test process keeps runs fast and results repeatable.
os.environ.setdefault("GENPIX_THREADS", "1")
torch.set_num_threads(1)


@pytest.fixture
def run_cli(capsys):
    """Run ``genpix ARGS`` in-process; returns (exit status, stdout, stderr)."""
    from genpix.cli import main

    def run(*args: str) -> tuple[int, str, str]:
        try:
            status = main([str(a) for a in args])
        except SystemExit as exit_:
            status = exit_.code
        captured = capsys.readouterr()
        return status, captured.out, captured.err

    return run


@pytest.fixture(scope="session")
def tiny_ddpm() -> Path:
    """The tiny class-conditional DDPM run the tests share (tests/tiny_ddpm.py), trained once per session.
    Read it, sample it, export it; copy it (tiny_ddpm.copy_tiny_ddpm) before changing it."""
    return tiny_ddpm_run()
