"""Live previews under polling: how many previews a `genpix serve` job renders while clients poll /progress.

A real server on loopback (tests/server_harness.py) with the tiny class-conditional ddpm (8x8, tests/tiny_ddpm.py);
one txt2img job of 2 x 100 Euler steps, watched by N pollers that ask /progress every W seconds. The preview of a
step is rendered once (server/jobs.py JobQueue.current_image), so the renders stay at most one per step whatever
the number of polls. Run from the repository root:

    GENPIX_THREADS=1 python benchmarks/bench_preview_polling.py --pollers 4 --every 0.005
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from server_harness import ServerThread, train_tiny_class_model  # noqa: E402

from genpix.server import create_app  # noqa: E402
from genpix.server.limits import Limits  # noqa: E402

BODY = {"prompt": "3", "seed": 1, "steps": 100, "n_iter": 2, "sampler_name": "Euler",
        "override_settings": {"sd_model_checkpoint": "digits-ddpm"}}


def poll(url: str, job: threading.Thread, every: float, out: list) -> None:
    while job.is_alive():
        out.append(requests.get(f"{url}/sdapi/v1/progress", timeout=60).json())
        time.sleep(every)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pollers", type=int, default=4)
    parser.add_argument("--every", type=float, default=0.005, help="seconds between one poller's requests")
    args = parser.parse_args()
    torch.set_num_threads(1)
    root = Path(tempfile.mkdtemp())
    train_tiny_class_model(root / "models")
    app = create_app(models_dir=root / "models", limits=Limits(max_steps=1000))
    jobs = app.state.context.jobs
    with ServerThread(app) as url:
        requests.post(f"{url}/sdapi/v1/txt2img", json={**BODY, "steps": 2}, timeout=60).raise_for_status()
        before, start = jobs.renders, time.perf_counter()
        job = threading.Thread(target=lambda: requests.post(f"{url}/sdapi/v1/txt2img", json=BODY, timeout=600))
        job.start()
        answers: list[list] = [[] for _ in range(args.pollers)]
        pollers = [threading.Thread(target=poll, args=(url, job, args.every, a)) for a in answers]
        for thread in pollers:
            thread.start()
        job.join()
        wall = time.perf_counter() - start
        for thread in pollers:
            thread.join()
    shown = sum(1 for a in answers for answer in a if answer["current_image"])
    print(f"{args.pollers} pollers every {args.every} s: job {wall:.2f} s, {sum(map(len, answers))} polls, "
          f"{shown} previews answered, {jobs.renders - before} rendered (200 steps)")


if __name__ == "__main__":
    main()
