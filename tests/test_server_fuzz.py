"""API fuzzing with Schemathesis: property-based requests, valid and malformed, made from the server's
own OpenAPI schema and sent to a real `genpix serve` on loopback. No answer may be a 5xx, and the
server answers normally afterwards (issue 21).

The server runs with small limits (steps, images, pixels) so that the valid generation requests the
fuzzer finds stay quick; every other request is refused by the same code paths as with the defaults.
"""

import subprocess
import sys
import time

import pytest
import requests
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from server_harness import free_port

schemathesis = pytest.importorskip("schemathesis")
from schemathesis import GenerationMode  # noqa: E402

EXAMPLES = {GenerationMode.POSITIVE: 100, GenerationMode.NEGATIVE: 100}  # per route and mode (at most)
LIMITS = ["--max-steps", "3", "--max-images", "2", "--max-pixels", "4096", "--max-prompt-length", "300",
          "--queue-size", "4"]


@pytest.fixture(scope="module")
def live_server():
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "genpix", "serve", "--port", str(port), "--model",
                                "fashion-vae", *LIMITS], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            requests.get(f"{url}/sdapi/v1/options", timeout=5)
            break
        except requests.ConnectionError:
            assert process.poll() is None and time.monotonic() < deadline, process.stdout.read()
            time.sleep(0.1)
    yield url
    process.terminate()
    process.wait(30)


def fuzz(operation, mode, url: str, tally: dict) -> None:
    """Send ``EXAMPLES[mode]`` requests for one operation; fail on the first 5xx."""
    session = requests.Session()

    @settings(max_examples=EXAMPLES[mode], deadline=None, database=None, derandomize=True,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @given(operation.as_strategy(generation_mode=mode))
    def run(case):
        response = case.call(base_url=url, session=session, timeout=60)
        tally["cases"] += 1
        tally["5xx"] += response.status_code >= 500
        tally["statuses"][response.status_code] = tally["statuses"].get(response.status_code, 0) + 1
        assert response.status_code < 500, (case.method, case.path, case.body, response.status_code,
                                            response.text[:300])

    try:
        run()
    except Unsatisfiable:  # a route with nothing to send wrong (no parameters, no body) has no negative case
        assert mode == GenerationMode.NEGATIVE


@pytest.mark.slow
def test_fuzzed_requests_never_get_a_5xx(live_server):
    schema = schemathesis.openapi.from_url(f"{live_server}/openapi.json")
    tally = {"cases": 0, "5xx": 0, "statuses": {}}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) > 20
    started = time.monotonic()
    for operation in operations:
        for mode in EXAMPLES:
            before, tic = tally["cases"], time.monotonic()
            fuzz(operation, mode, live_server, tally)
            print(f"{operation.label} {mode.value}: {tally['cases'] - before} cases, {time.monotonic() - tic:.1f} s")
    elapsed = time.monotonic() - started
    print(f"fuzz: {tally['cases']} cases over {len(operations)} routes in {elapsed:.0f} s, {tally['5xx']} 5xx; "
          f"statuses {dict(sorted(tally['statuses'].items()))}")
    assert tally["5xx"] == 0 and tally["cases"] > 10 * len(operations)
    r = requests.post(f"{live_server}/sdapi/v1/txt2img", json={"seed": 1}, timeout=60)  # healthy after
    assert r.status_code == 200 and len(r.json()["images"]) == 1
