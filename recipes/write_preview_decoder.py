"""Write a `genpix train preview-decoder` run's student as a model's preview_decoder.safetensors
(TAESD's key layout, float16), the file genpix's live previews read beside a latent model's weights.

    python recipes/write_preview_decoder.py RUN MODEL_DIR/preview_decoder.safetensors
"""

from __future__ import annotations

import sys

from genpix.io.checkpoint import read_model_dir
from genpix.io.tiny_decoder import tiny_decoder_from_state_dict, write_tiny_decoder


def main(run: str, out: str) -> None:
    weights = read_model_dir(run).weights
    if "preview_decoder" not in weights:
        sys.exit(f"{run} holds no preview decoder (train one with `genpix train preview-decoder`)")
    print(write_tiny_decoder(out, tiny_decoder_from_state_dict(weights["preview_decoder"], run)))


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__.strip().splitlines()[-1].strip())
    main(*sys.argv[1:])
