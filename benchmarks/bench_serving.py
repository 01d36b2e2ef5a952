"""Batched serving: requests/s and p50/p95 latency of `genpix serve` at concurrency 1 and 4, with the
merging of queued txt2img requests (server/batching.py) on and off, for bundled diffusion models.

For each model and each --max-merged-images value, starts `genpix serve` in a subprocess on a free
loopback port (bench_server.py's helpers), sends one warm-up request, then for each concurrency sends
``--requests`` txt2img requests of one image, each with its own seed, from a pool of real HTTP
clients. A request is lost when it gets no 200 answer with its one image and its own seed; the table
counts them, and the mean ``merged_jobs`` the answers report (1: no request merged). Prints a
Markdown table and the concurrency-4 / concurrency-1 throughput ratio.

    GENPIX_THREADS=1 python benchmarks/bench_serving.py --requests 40
    GENPIX_THREADS=1 python benchmarks/bench_serving.py --models fashion-ddpm --steps 10 --merge 8 --requests 40
    GENPIX_THREADS=2 python benchmarks/bench_serving.py --models fashion-ddpm --merge 1 8 --merge-wait-ms 0 50
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import urllib.error
from concurrent.futures import ThreadPoolExecutor

from bench_server import free_port, percentile, post_json, wait_until_serving

PROMPTS = {"shapes-ldm": "a red circle at the top left", "fashion-ldm": "a pair of sneakers"}  # others: ""


def one_request(url: str, body: dict, seed: int) -> tuple[float, int | None]:
    """(latency in s, merged_jobs), merged_jobs None when the request was lost."""
    tic = time.perf_counter()
    try:
        answer = post_json(url, {**body, "seed": seed})
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return time.perf_counter() - tic, None
    info = json.loads(answer["info"])
    if len(answer["images"]) != 1 or info["all_seeds"] != [seed]:
        return time.perf_counter() - tic, None
    return time.perf_counter() - tic, info.get("merged_jobs", 1)


def run_load(url: str, body: dict, requests: int, concurrency: int, first_seed: int) -> dict:
    tic = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        answers = list(pool.map(lambda n: one_request(url, body, first_seed + n), range(requests)))
    wall = time.perf_counter() - tic
    answered = [(latency, merged) for latency, merged in answers if merged is not None]
    latencies = [latency for latency, _ in answered] or [float("nan")]
    return {"concurrency": concurrency, "requests": requests, "lost": requests - len(answered),
            "requests_per_s": len(answered) / wall, "p50_ms": 1000 * percentile(latencies, 50),
            "p95_ms": 1000 * percentile(latencies, 95),
            "merged": sum(m for _, m in answered) / max(1, len(answered))}


def serve_and_load(model: str, merge: int, wait: int, args: argparse.Namespace) -> list[dict]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "genpix", "serve", "--port", str(port), "--model", model,
               "--max-merged-images", str(merge), "--merge-wait-ms", str(wait),
               "--queue-size", str(max(16, max(args.concurrency)))]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, env=os.environ.copy())
    try:
        wait_until_serving(base, server)
        url = base + "/sdapi/v1/txt2img"
        body = {"prompt": PROMPTS.get(model, ""), "batch_size": 1, "n_iter": 1}
        if args.steps is not None:
            body["steps"] = args.steps
        post_json(url, {**body, "seed": 0})  # warm-up: model load, first-call allocations
        return [{"model": model, "merge": merge, "wait": wait, **run_load(url, body, args.requests, c, 1000 * (i + 1))}
                for i, c in enumerate(args.concurrency)]
    finally:
        server.terminate()
        server.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["fashion-ddpm", "shapes-ldm"], help="bundled model names")
    parser.add_argument("--steps", type=int, default=10, help="sampling steps (default 10)")
    parser.add_argument("--requests", type=int, default=40, help="requests per concurrency level")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--merge", type=int, nargs="+", default=[1, 8],
                        help="--max-merged-images values to serve with (1: no merging; default 1 8)")
    parser.add_argument("--merge-wait-ms", type=int, nargs="+", default=[50],
                        help="--merge-wait-ms values to serve with when merging (default 50)")
    args = parser.parse_args()
    if args.requests < 1 or any(v < 1 for v in [*args.concurrency, *args.merge, args.steps]):
        parser.error("--requests, --concurrency, --merge and --steps must be at least 1")

    runs = [(model, merge, wait) for model in args.models for merge in args.merge
            for wait in (args.merge_wait_ms if merge > 1 else [0])]
    rows = [row for model, merge, wait in runs for row in serve_and_load(model, merge, wait, args)]
    print(f"{args.requests} txt2img requests of 1 image per concurrency level, steps {args.steps}, "
          f"GENPIX_THREADS={os.environ.get('GENPIX_THREADS', '(unset)')}\n")
    print("| model | max merged images | merge wait (ms) | concurrency | requests | lost | requests/s | p50 (ms) "
          "| p95 (ms) | mean merged_jobs |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['merge']} | {r['wait']} | {r['concurrency']} | {r['requests']} | {r['lost']} "
              f"| {r['requests_per_s']:.1f} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} | {r['merged']:.2f} |")
    print()
    for model, merge, wait in runs:
        rate = {r["concurrency"]: r["requests_per_s"] for r in rows if (r["model"], r["merge"], r["wait"]) == (model, merge, wait)}
        low, high = min(rate), max(rate)
        if low != high and rate[low] > 0:
            print(f"{model}, max merged images {merge}, wait {wait} ms: concurrency {high} / {low} = "
                  f"{rate[high] / rate[low]:.2f}x")


if __name__ == "__main__":
    main()
