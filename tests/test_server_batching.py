"""Merged batches (server/batching.py) on a real uvicorn server: txt2img requests queued behind a
running job that agree on everything but their seeds run as one pipeline call, each answered with the
images, seeds and infotexts it gets alone; the others run alone; none is lost; /interrupt and /skip end
the leader's job only. The tiny class-conditional digits-ddpm (8x8) is the model."""

import base64
import io
import json
import threading
import time

import numpy as np
import pytest
import requests
from PIL import Image
from server_harness import ServerThread, train_tiny_class_model

import genpix
from genpix.errors import GenpixError
from genpix.server import create_app

DIGITS = {"sd_model_checkpoint": "digits-ddpm"}
BASE = {"prompt": "3", "steps": 3, "sampler_name": "Euler a", "cfg_scale": 2, "batch_size": 1, "subseed": 1,
        "override_settings": DIGITS}
BLOCKER = {"prompt": "5", "steps": 40, "sampler_name": "Euler a", "batch_size": 8, "n_iter": 100,
           "override_settings": DIGITS}  # runs alone (n_iter > 1) until interrupted


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    models = tmp_path_factory.mktemp("batching") / "models"
    train_tiny_class_model(models)
    return models


@pytest.fixture(scope="module")
def server(models):
    with ServerThread(create_app(models_dir=models)) as url:  # merges up to 8 images (Limits)
        yield url


def post(url, body, path="txt2img"):
    return requests.post(f"{url}/sdapi/v1/{path}", json=body, timeout=120)


def progress(url):
    return requests.get(f"{url}/sdapi/v1/progress", params={"skip_current_image": True}, timeout=10).json()


def wait_for(url, condition, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = progress(url)["state"]
        if condition(state):
            return state
        time.sleep(0.005)
    raise AssertionError("the server never reached the awaited state")


def start(url, body, answers, index):
    thread = threading.Thread(target=lambda: answers.__setitem__(index, post(url, body)), daemon=True)
    thread.start()
    return thread


def queued_behind_a_running_job(url, bodies, after_release=None, status=200):
    """Send ``bodies`` one by one while a long job runs (each queued before the next is sent), then
    interrupt that job so the queued ones start; ``after_release(url)`` runs while they do. Their answers."""
    blocker = [None]
    threads = [start(url, BLOCKER, blocker, 0)]
    wait_for(url, lambda s: s["job"] == "txt2img" and s["sampling_step"] >= 1)
    answers = [None] * len(bodies)
    for index, body in enumerate(bodies):
        threads.append(start(url, body, answers, index))
        wait_for(url, lambda s: s["queued"] == index + 1)
    requests.post(f"{url}/sdapi/v1/interrupt", timeout=10)
    if after_release is not None:
        after_release(url)
    for thread in threads:
        thread.join(120)
    assert blocker[0].status_code == 200 and json.loads(blocker[0].json()["info"])["interrupted"]
    assert all(a is not None and a.status_code == status for a in answers), [a.text for a in answers if a]
    return [(a.json().get("images"), json.loads(a.json().get("info", "{}"))) for a in answers]


def pixels(images):
    return [np.asarray(Image.open(io.BytesIO(base64.b64decode(image)))) for image in images]


def assert_same_as_alone(url, body, images, info):
    """The answer a request gets alone (nothing queued with it): the same pixels, seeds and infotexts."""
    alone = post(url, body)
    alone_info = json.loads(alone.json()["info"])
    assert alone_info["merged_jobs"] == 1
    assert info["all_seeds"] == alone_info["all_seeds"] and info["all_subseeds"] == alone_info["all_subseeds"]
    assert info["infotexts"] == alone_info["infotexts"]
    for got, want in zip(pixels(images), pixels(alone.json()["images"]), strict=True):
        assert np.array_equal(got, want)


def test_per_image_seeds_give_each_image_its_own_seeds_picture(models):
    """The pipeline hook merging uses: GenerationRequest.seeds in place of seed + i."""
    pipe = genpix.load_pipeline(str(models / "digits-ddpm"))
    common = {"steps": 3, "sampler": "Euler a", "class_name": "3", "cfg_scale": 2.0}
    both = pipe(n=2, seeds=(40, 10), subseeds=(7, 8), **common)
    assert both.info["seeds"] == [40, 10] and both.info["subseeds"] == [7, 8] and "Seed: 10," in both.infotexts[1]
    for image, seed in zip(both.images, (40, 10)):
        assert np.array_equal(np.asarray(image), np.asarray(pipe(n=1, seed=seed, **common).images[0]))
    with pytest.raises(GenpixError, match="seeds must list one seed per image"):
        pipe(n=2, seeds=(1, 2, 3), **common)


def test_queued_requests_with_other_seeds_merge_and_match_their_answers_alone(server):
    bodies = [{**BASE, "seed": 10}, {**BASE, "seed": 20}, {**BASE, "seed": 30, "batch_size": 2},
              {**BASE, "seed": 40, "send_images": True}]
    answers = queued_behind_a_running_job(server, bodies)
    assert [info["merged_jobs"] for _, info in answers] == [4, 4, 4, 4]
    assert [info["all_seeds"] for _, info in answers] == [[10], [20], [30, 31], [40]]
    assert len({info["job_timestamp"] for _, info in answers}) == 1  # one job made them all
    different = [pixels(images)[0] for images, _ in answers]
    assert not np.array_equal(different[0], different[1])  # each its own noise
    for body, (images, info) in zip(bodies, answers):
        assert_same_as_alone(server, body, images, info)


def test_variation_seeds_merge_too(server):
    varied = {**BASE, "subseed_strength": 0.4, "batch_size": 2}
    bodies = [{**varied, "seed": 7, "subseed": 100}, {**varied, "seed": 8, "subseed": 200}]
    answers = queued_behind_a_running_job(server, bodies)
    assert [info["merged_jobs"] for _, info in answers] == [2, 2]
    assert [info["all_subseeds"] for _, info in answers] == [[100, 101], [200, 201]]
    assert [info["all_seeds"] for _, info in answers] == [[7, 7], [8, 8]]  # a variation keeps the seed
    for body, (images, info) in zip(bodies, answers):
        assert_same_as_alone(server, body, images, info)


def test_incompatible_requests_run_alone_and_none_is_lost(server):
    bodies = [{**BASE, "seed": 1},
              {**BASE, "seed": 2, "steps": 4},  # other steps
              {**BASE, "seed": 3, "prompt": "4"},  # other class (prompt)
              {**BASE, "seed": 4, "sampler_name": "DPM adaptive"},  # step sizes of the whole batch
              {**BASE, "seed": 5, "n_iter": 2},  # a batch count: runs alone
              {**BASE, "seed": 6, "batch_size": 5},
              {**BASE, "seed": 7, "batch_size": 3},  # 1 + 5 + 3 > 8 images: not with those two
              {**BASE, "seed": 8}]  # 1 + 5 + 1 images: with them
    answers = queued_behind_a_running_job(server, bodies)
    assert [info["merged_jobs"] for _, info in answers] == [3, 1, 1, 1, 1, 3, 1, 3]
    assert [len(images) for images, _ in answers] == [1, 1, 1, 1, 2, 5, 3, 1]
    assert [info["all_seeds"][0] for _, info in answers] == list(range(1, 9))
    assert [info["steps"] for _, info in answers] == [3, 4, 3, 3, 3, 3, 3, 3]
    assert answers[2][1]["infotexts"][0].startswith("4\n")


@pytest.mark.parametrize("stop", ["interrupt", "skip"])
def test_interrupt_ends_the_leaders_job_and_the_others_run_again(server, stop):
    long = {**BASE, "steps": 100, "batch_size": 2}
    bodies = [{**long, "seed": 100}, {**long, "seed": 200}, {**long, "seed": 300}]
    seen = {}

    def stop_the_merged_batch(url):
        state = wait_for(url, lambda s: s["merged_jobs"] == 3 and s["sampling_step"] >= 2)
        requests.post(f"{url}/sdapi/v1/{stop}", timeout=10)
        seen["rerun"] = wait_for(url, lambda s: s["merged_jobs"] == 2)  # the two others, started again
        assert state["job_timestamp"] <= seen["rerun"]["job_timestamp"]

    answers = queued_behind_a_running_job(server, bodies, stop_the_merged_batch)
    (first, first_info), rest = answers[0], answers[1:]
    assert first == [] and first_info["interrupted"] == (stop == "interrupt")  # as it would alone
    for body, (images, info) in zip(bodies[1:], rest):
        assert len(images) == 2 and not info["interrupted"] and info["merged_jobs"] == 2
        assert info["job_timestamp"] == seen["rerun"]["job_timestamp"]
        assert_same_as_alone(server, body, images, info)
    assert progress(server)["state"]["job"] == ""


def test_a_shutdown_during_a_merged_batch_answers_every_job_503(models):
    app = create_app(models_dir=models)
    bodies = [{**BASE, "steps": 100, "seed": seed} for seed in (1, 2, 3)]

    def close_while_merged(url):
        wait_for(url, lambda s: s["merged_jobs"] == 3 and s["sampling_step"] >= 2)
        app.state.context.jobs.close()  # what SIGTERM does (server/app.py)

    with ServerThread(app) as url:
        answers = queued_behind_a_running_job(url, bodies, close_while_merged, status=503)
    assert all(images is None for images, _ in answers)


def test_a_batch_waits_for_as_many_jobs_as_its_last_batch_had_and_a_lone_client_never_waits(models):
    """--merge-wait-ms: clients that each wait for their answer send their next requests apart; the
    leader waits (here up to 3 s) for as many as the key's last batch had, and no longer once one is gone."""
    from genpix.server.limits import Limits

    with ServerThread(create_app(models_dir=models, limits=Limits(merge_wait_ms=3000))) as url:
        lone = {**BASE, "prompt": "7"}
        tic = time.monotonic()
        for seed in range(3):  # a lone client: batches of one job, so no wait at all
            assert json.loads(post(url, {**lone, "seed": seed}).json()["info"])["merged_jobs"] == 1
        assert time.monotonic() - tic < 3.0
        answers = queued_behind_a_running_job(url, [{**BASE, "seed": 1}, {**BASE, "seed": 2}])
        assert [info["merged_jobs"] for _, info in answers] == [2, 2]  # the key's last batch: 2 jobs
        later = [None, None]
        tic = time.monotonic()
        threads = [start(url, {**BASE, "seed": 3}, later, 0)]
        time.sleep(0.5)  # the second client asks half a second after the first
        threads.append(start(url, {**BASE, "seed": 4}, later, 1))
        for thread in threads:
            thread.join(60)
        assert [json.loads(a.json()["info"])["merged_jobs"] for a in later] == [2, 2]
        assert time.monotonic() - tic < 3.0  # the wait ended when the second arrived
        tic = time.monotonic()  # one client left: the next waits out the 3 s once, then runs alone ...
        assert json.loads(post(url, {**BASE, "seed": 5}).json()["info"])["merged_jobs"] == 1
        assert time.monotonic() - tic >= 2.9
        tic = time.monotonic()  # ... and its batch of one sets the key's size: no more waiting
        assert json.loads(post(url, {**BASE, "seed": 6}).json()["info"])["merged_jobs"] == 1
        assert time.monotonic() - tic < 2.0


def test_merge_wait_flag_is_checked():
    from genpix.server.limits import Limits

    assert Limits(merge_wait_ms=0).merge_wait_ms == 0
    with pytest.raises(ValueError, match="merge_wait_ms must be a whole number >= 0"):
        Limits(merge_wait_ms=-1)
