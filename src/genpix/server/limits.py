"""What one request may cost: prompt length, images, output pixels, steps, the queue's length, and
how many images one merged batch of queued requests makes.

Every limit is checked from the request's fields alone, before any picture is decoded or any job is
queued, so a refused request costs the server almost nothing. The defaults admit whatever sd-webui's
own UI can send (batch size 8 x batch count 100 = 800 images, 150 steps, 2048 x 2048 pictures), and
each has a ``genpix serve`` flag (cli/serve.py). A refusal is a 413 naming the limit and its flag.
"""

from __future__ import annotations

from dataclasses import dataclass

from genpix.server.errors import ApiError


@dataclass(frozen=True)
class Limits:
    max_prompt_length: int = 10_000  # characters in the prompt, and in the negative prompt (--max-prompt-length)
    max_images: int = 800  # batch_size x n_iter (--max-images); sd-webui's UI: 8 x 100
    max_pixels: int = 64 * 1024 * 1024  # width x height x images made per request (--max-pixels)
    max_steps: int = 150  # sampling steps (--max-steps); sd-webui's UI slider stops at 150
    max_input_pixels: int = 64 * 1024 * 1024  # decoded init images and mask together, width x height
    queue_size: int = 16  # jobs waiting behind the running one before a 503 (--queue-size)
    # images one merged batch of queued txt2img jobs makes (server/batching.py; --max-merged-images, 1: no
    # merging); sd-webui's UI batch size goes to 8, and pipelines run 4 images at a time
    max_merged_images: int = 8
    # milliseconds a merged batch waits for the jobs its key's last batch had (--merge-wait-ms, 0: none)
    merge_wait_ms: int = 50

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            least = 0 if name == "merge_wait_ms" else 1
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                raise ValueError(f"{name} must be a whole number >= {least}, got {value!r}")


def _refuse(what: str, value: int, limit: int, flag: str) -> ApiError:
    return ApiError(f"{what} is {value}; this server allows at most {limit} (genpix serve {flag})", 413)


def check_request(request, limits: Limits, model_size: int | None = None) -> None:
    """Refuse a txt2img/img2img request over ``limits`` (a 413 that names the limit and its flag).

    ``model_size`` is the side of the only size the model makes (None: any), for a request that
    leaves out width or height.
    Runs before anything else touches the request: before the model switch of
    ``override_settings``, before decoding pictures, before queueing.
    """
    for field in ("prompt", "negative_prompt"):
        length = len(getattr(request, field) or "")
        if length > limits.max_prompt_length:
            raise _refuse(f"{field} length", length, limits.max_prompt_length, "--max-prompt-length")
    images = request.batch_size * request.n_iter
    if images > limits.max_images:
        raise _refuse("batch_size x n_iter", images, limits.max_images, "--max-images")
    if request.steps is not None and request.steps > limits.max_steps:
        raise _refuse("steps", request.steps, limits.max_steps, "--max-steps")
    pixels = (request.width or model_size or 512) * (request.height or model_size or 512) * images
    if pixels > limits.max_pixels:
        raise _refuse("width x height x images", pixels, limits.max_pixels, "--max-pixels")
    count = len(getattr(request, "init_images", None) or [])
    if count > 1 and count != request.batch_size:  # what img2img takes: 1, or one per image of a batch
        raise ApiError(f"got {count} init images for batch_size {request.batch_size}; "
                       f"send 1 or {request.batch_size}")


def check_input_pixels(sizes: list[tuple[int, int]], limits: Limits) -> None:
    """Refuse init images and mask whose decoded pixels together exceed ``limits.max_input_pixels``
    (called with their header sizes, before any of them is decoded)."""
    total = sum(width * height for width, height in sizes)
    if total > limits.max_input_pixels:
        raise _refuse("the decoded size of the sent pictures (pixels)", total, limits.max_input_pixels,
                      "--max-pixels")
