"""`genpix serve` under load: requests/s and p50/p95 latency of txt2img at several concurrencies.

Starts `genpix serve` in a subprocess on a free loopback port with a bundled model, waits until it
answers, sends one warm-up request, then for each concurrency sends ``--requests`` txt2img requests
(one image each, seed = request number) from a thread pool of real HTTP clients (urllib, one
connection per request) and prints a Markdown table. The server runs one job at a time (its job
queue), so concurrency shows queueing and HTTP overhead, not parallel generation.

    GENPIX_THREADS=1 python benchmarks/bench_server.py --model fashion-vae --requests 40
    GENPIX_THREADS=1 python benchmarks/bench_server.py --model fashion-ddpm --steps 10 --requests 40
"""

from __future__ import annotations

import argparse
import json
import math
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post_json(url: str, body: dict, timeout: float = 300) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.load(response)


def wait_until_serving(base: str, server: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if server.poll() is not None:
            raise RuntimeError(f"genpix serve exited with code {server.returncode} before answering")
        try:
            with urllib.request.urlopen(base + "/sdapi/v1/options", timeout=5):
                return
        except (urllib.error.URLError, ConnectionError):
            if time.monotonic() > deadline:
                raise RuntimeError(f"genpix serve did not answer at {base} within {timeout:.0f} s") from None
            time.sleep(0.2)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def run_load(url: str, body: dict, requests: int, concurrency: int) -> dict:
    def one(number: int) -> float:
        tic = time.perf_counter()
        answer = post_json(url, {**body, "seed": number})
        if len(answer["images"]) != 1:
            raise RuntimeError(f"request {number} got {len(answer['images'])} images, expected 1")
        return time.perf_counter() - tic

    tic = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        latencies = list(pool.map(one, range(requests)))
    wall = time.perf_counter() - tic
    return {"concurrency": concurrency, "requests": requests, "requests_per_s": requests / wall,
            "p50_ms": 1000 * percentile(latencies, 50), "p95_ms": 1000 * percentile(latencies, 95)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="fashion-vae", help="a bundled model name (default fashion-vae)")
    parser.add_argument("--steps", type=int, help="sampling steps for a diffusion model (default: the model's)")
    parser.add_argument("--requests", type=int, default=40, help="requests per concurrency level")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4])
    args = parser.parse_args()
    if args.requests < 1 or any(c < 1 for c in args.concurrency):
        parser.error("--requests and --concurrency must be at least 1")

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "genpix", "serve", "--port", str(port), "--model", args.model],
                              stdout=subprocess.DEVNULL, env=os.environ.copy())
    try:
        wait_until_serving(base, server)
        url = base + "/sdapi/v1/txt2img"
        body = {"prompt": "", "batch_size": 1, "n_iter": 1}
        if args.steps is not None:
            body["steps"] = args.steps
        post_json(url, {**body, "seed": 0})  # warm-up: model load, first-call allocations
        rows = [run_load(url, body, args.requests, c) for c in args.concurrency]
    finally:
        server.terminate()
        server.wait(timeout=30)

    steps = args.steps if args.steps is not None else "model's"
    print(f"model {args.model}, steps {steps}, {args.requests} txt2img requests of 1 image per concurrency level, "
          f"GENPIX_THREADS={os.environ.get('GENPIX_THREADS', '(unset)')}\n")
    print("| model | steps | concurrency | requests | requests/s | p50 latency (ms) | p95 latency (ms) |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {args.model} | {steps} | {row['concurrency']} | {row['requests']} | {row['requests_per_s']:.1f} "
              f"| {row['p50_ms']:.1f} | {row['p95_ms']:.1f} |")


if __name__ == "__main__":
    main()
