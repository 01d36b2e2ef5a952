"""Shared by the tests/test_server_*.py files: a real uvicorn server on a loopback port, in a thread,
the tiny class-conditional diffusion model the tests share, and a headless Chromium page for the UI tests."""

from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import uvicorn
from tiny_ddpm import copy_tiny_ddpm

CHROMIUM = "/usr/bin/chromium"  # Debian's; Playwright's own browsers are not installed
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def train_tiny_class_model(models_dir: Path, name: str = "digits-ddpm") -> Path:
    """A class-conditional ddpm model folder (classes "0".."9", 8x8 grayscale) under ``models_dir``: a copy
    of the run the tests share (tests/tiny_ddpm.py), trained once per session."""
    return copy_tiny_ddpm(models_dir / name)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerThread:
    """``with ServerThread(app) as url:`` serves ``app`` with uvicorn on 127.0.0.1 until the block ends."""

    def __init__(self, app) -> None:
        self.port = free_port()
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                timeout_graceful_shutdown=2)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="uvicorn", daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)


@contextmanager
def browser_page(url: str):
    """A Playwright page in headless Chromium, opened at ``url`` + "/". Every request the page makes
    must stay on the server (no CDN, nothing fetched from outside): checked when the block ends."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page()
        outside = []
        page.on("request", lambda r: None if r.url.startswith(url) or r.url.startswith("data:")
                else outside.append(r.url))
        page.goto(url + "/")
        yield page
        browser.close()
    assert outside == [], f"the page fetched from outside the server: {outside}"
