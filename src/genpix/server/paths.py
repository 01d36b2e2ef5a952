"""Server paths stay on the server: the models-folder scan keeps inside its folder, and error
messages name files relative to the folders a client knows of (or by their last part), never by
their absolute path."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

# an absolute path of two or more parts (not an API route such as /sdapi/v1/txt2img)
ABSOLUTE_PATH = re.compile(r"(?<![\w.~-])/(?!sdapi/)(?:[^\s'\"/:,;()\[\]]+/)+([^\s'\",;()\[\]]*[^\s'\",;()\[\].:])")


def inside_folder(root: str | Path, path: str | Path) -> bool:
    """Whether ``path``, symlinks resolved, is ``root`` or lies under it (a symlinked model file or
    folder that points outside the models folder is not offered)."""
    root_real = Path(os.path.realpath(root))
    real = Path(os.path.realpath(path))
    return real == root_real or root_real in real.parents


def redact_paths(message: str, roots: list[str | Path] = ()) -> str:
    """``message`` with each path under one of ``roots`` made relative to it, and every other
    absolute path cut to its last part."""
    for root in sorted({str(r) for r in (*roots, *(os.path.realpath(r) for r in roots))}, key=len, reverse=True):
        if root not in ("", "/"):
            message = message.replace(root.rstrip("/") + "/", "")
    return ABSOLUTE_PATH.sub(lambda m: m.group(1) or "(a server path)", message)


def default_roots() -> list[str]:
    """Folders whose names are the server's business: the working folder, home and temp folders."""
    return [os.getcwd(), str(Path.home()), tempfile.gettempdir()]
