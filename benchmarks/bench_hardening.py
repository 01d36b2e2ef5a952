"""`genpix serve` under the malicious requests of issue 21, then under mixed load.

1. Memory: the server's RSS (VmRSS, and the peak VmHWM, from /proc) before and after each attack:
   forty 4096x4096 PNGs in one img2img request (for batch_size 1 and 40), a chunked 600 MB body,
   a 1 MB negative prompt at batch 64 x 16, and eight concurrent png-info requests of a 4096x4096 PNG.
2. Load: ``--concurrency`` clients for ``--seconds`` seconds, every fourth request malformed (bad JSON,
   NaN, text/plain, too many images, bad base64, a foreign Origin), the others txt2img of one image.
   Every request must get its expected answer (200, or the 4xx of its kind): none lost.

    GENPIX_THREADS=1 python benchmarks/bench_hardening.py --model fashion-vae --seconds 60 --concurrency 8
"""

from __future__ import annotations

import argparse
import base64
import http.client
import io
import json
import math
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from bench_server import free_port, percentile, wait_until_serving  # noqa: E402

MALFORMED = [  # (route, body bytes, headers, expected status)
    ("txt2img", b"{not json", {"Content-Type": "application/json"}, 422),
    ("txt2img", b'{"subseed_strength": NaN}', {"Content-Type": "application/json"}, 400),
    ("txt2img", b'{"prompt": ""}', {"Content-Type": "text/plain"}, 415),
    ("txt2img", b'{"batch_size": 64, "n_iter": 100}', {"Content-Type": "application/json"}, 413),
    ("img2img", b'{"init_images": ["%%%"]}', {"Content-Type": "application/json"}, 400),
    ("txt2img", b"{}", {"Content-Type": "application/json", "Origin": "http://attacker.example"}, 403),
]


def rss(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of process ``pid`` in MiB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def request(port: int, method: str, path: str, body=None, headers=None, chunked=False) -> tuple[int, float]:
    """(status, seconds); status 0 when the connection broke before an answer."""
    start = time.perf_counter()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    try:
        connection.request(method, path, body=body, headers=headers or {}, encode_chunked=chunked)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server answered (413) before the whole body was sent
    try:
        response = connection.getresponse()
        response.read()
        return response.status, time.perf_counter() - start
    except (ConnectionError, http.client.HTTPException):
        return 0, time.perf_counter() - start
    finally:
        connection.close()


def png_b64(size: int, mode: str = "L") -> str:
    buffer = io.BytesIO()
    Image.new(mode, (size, size)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def attacks(port: int) -> list[tuple[str, callable]]:
    json_headers = {"Content-Type": "application/json"}
    big = png_b64(4096)

    def forty(batch):
        body = json.dumps({"init_images": [big] * 40, "batch_size": batch}).encode()
        return request(port, "POST", "/sdapi/v1/img2img", body, json_headers)

    def chunked():
        chunks = (b'{"prompt": "' + b"a" * (1 << 20) for _ in range(600))
        return request(port, "POST", "/sdapi/v1/txt2img", chunks, json_headers, chunked=True)

    def negative_prompt():
        body = json.dumps({"negative_prompt": "a" * (1 << 20), "batch_size": 64, "n_iter": 16}).encode()
        return request(port, "POST", "/sdapi/v1/txt2img", body, json_headers)

    def png_info_parallel():
        body = json.dumps({"image": png_b64(4096, "RGB")}).encode()
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda _: request(port, "POST", "/sdapi/v1/png-info", body, json_headers),
                                    range(8)))
        return answers[0][0], max(a[1] for a in answers)

    return [("40 PNGs of 4096x4096, batch_size 1 (2.6 MB body)", lambda: forty(1)),
            ("40 PNGs of 4096x4096, batch_size 40", lambda: forty(40)),
            ("chunked 600 MB body", chunked),
            ("1 MB negative prompt, batch 64 x 16", negative_prompt),
            ("8 concurrent png-info, 4096x4096 RGB", png_info_parallel)]


def load(port: int, seconds: float, concurrency: int) -> dict:
    """Mixed valid and malformed requests from ``concurrency`` clients for ``seconds``."""
    deadline = time.monotonic() + seconds
    valid = json.dumps({"seed": 1, "batch_size": 1}).encode()

    def client(number: int) -> list[tuple[bool, int, int, float]]:
        done, i = [], 0
        while time.monotonic() < deadline:
            if i % 4 == 3:  # every fourth request of each client is malformed, each kind in turn
                route, body, headers, expected = MALFORMED[(number + i // 4) % len(MALFORMED)]
            else:
                route, body, headers, expected = "txt2img", valid, {"Content-Type": "application/json"}, 200
            status, elapsed = request(port, "POST", f"/sdapi/v1/{route}", body, headers)
            done.append((expected == 200, expected, status, elapsed))
            i += 1
        return done

    started = time.monotonic()
    with ThreadPoolExecutor(concurrency) as pool:
        results = [r for rs in pool.map(client, range(concurrency)) for r in rs]
    wall = time.monotonic() - started
    lost = sum(status != expected for _, expected, status, _ in results)
    wrong = Counter((expected, status) for _, expected, status, _ in results if status != expected)
    good = [t for ok, _, _, t in results if ok]
    return {"requests": len(results), "wall_s": wall, "per_s": len(results) / wall, "lost": lost,
            "unexpected (expected, got)": {str(k): v for k, v in wrong.items()},
            "valid": len(good), "malformed": len(results) - len(good),
            "p50_ms": 1000 * percentile([r[3] for r in results], 50),
            "p95_ms": 1000 * percentile([r[3] for r in results], 95),
            "p95_valid_ms": 1000 * percentile(good, 95)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="fashion-vae")
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "genpix", "serve", "--port", str(port), "--model", args.model],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until_serving(f"http://127.0.0.1:{port}", server)
        request(port, "POST", "/sdapi/v1/txt2img", b'{"seed": 0}', {"Content-Type": "application/json"})
        print("| request | status | seconds | RSS after (MiB) | peak RSS so far (MiB) |\n|---|---|---|---|---|")
        now, peak = rss(server.pid)
        print(f"| (warm, before the attacks) | | | {now:.0f} | {peak:.0f} |")
        for name, attack in attacks(port):
            status, elapsed = attack()
            now, peak = rss(server.pid)
            print(f"| {name} | {status} | {elapsed:.2f} | {now:.0f} | {peak:.0f} |", flush=True)
        figures = load(port, args.seconds, args.concurrency)
        print(f"\nload: {json.dumps({k: round(v, 1) if isinstance(v, float) else v for k, v in figures.items()})}")
        now, peak = rss(server.pid)
        print(f"RSS after the load: {now:.0f} MiB, peak {peak:.0f} MiB")
        if figures["lost"] or not math.isfinite(figures["per_s"]):
            raise SystemExit(f"{figures['lost']} requests did not get their expected answer")
    finally:
        server.terminate()
        server.wait(30)


if __name__ == "__main__":
    main()
