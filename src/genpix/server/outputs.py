"""--outputs-dir: every generated image saved as a PNG with its infotext, sd-webui style.

Files are ``OUTPUTS/{txt2img,img2img}-images/NNNNN-SEED.png``, numbered on after the files already
there; only the job worker writes, so numbers never collide.
"""

from __future__ import annotations

import re
from pathlib import Path

from PIL import Image

from genpix.io.images import save_png


class OutputFolder:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def save(self, kind: str, images: list[Image.Image], seeds: list[int], infotexts: list[str]) -> list[Path]:
        folder = self.root / f"{kind}-images"
        folder.mkdir(parents=True, exist_ok=True)
        numbers = [int(m.group(1)) for f in folder.glob("*.png") if (m := re.match(r"(\d{5,})-", f.name))]
        first = max(numbers, default=-1) + 1
        return [save_png(image, folder / f"{first + i:05d}-{seed}.png", text)
                for i, (image, seed, text) in enumerate(zip(images, seeds, infotexts))]
