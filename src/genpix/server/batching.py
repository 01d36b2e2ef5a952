"""Merged batches: queued txt2img jobs that agree on everything but their seeds run as one pipeline call.

sd-webui clients send one request per picture; a model that makes 4 images in about the time of 1
answers them faster as one batch. Every mergeable job is queued as usual (server/jobs.py) and also
pinned to a board under its :func:`merge_key`. When the worker reaches one (the leader), it takes the
jobs with the same key still waiting, in arrival order, up to ``Limits.max_merged_images`` images, out
of the queue (waiting up to ``Limits.merge_wait_ms`` for as many as the key's last batch had: see
:meth:`Batcher._gather`) and makes all their images in one call with per-image seeds
(``GenerationRequest.seeds``). Image i of a job draws its noise from its own generator, so it is the
picture the job gets alone, to the float rounding of the network on a larger batch. A merged job can
answer before jobs queued ahead of it.

The key holds the model, the settings and every request field but seed, subseed, batch_size and
what only shapes the answer (send_images, save_images): the prompts must agree, as the pipeline
encodes one prompt per call. Jobs that run alone: img2img, scripts, the hires fix, a refiner, a
batch count over 1 (an interrupt keeps its finished batches), and DPM adaptive, whose step sizes
follow the whole batch's error (tests/test_samplers.py); no model defaults to it.

/progress shows the leader as the running job, with ``merged_jobs`` the jobs it makes images for.
/interrupt and /skip name no job and act on the leader, as on the job that would run alone: the
merged call ends, the leader answers as it would alone (interrupted, or no images), and the others
start again at once, as a new merged batch without it. If a merged call fails, each job runs alone,
so each gets its own answer or its own error.
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import asdict, dataclass, field
from typing import Any

from genpix.diffusion import samplers
from genpix.errors import GenpixError
from genpix.server.catalog import ModelEntry
from genpix.server.errors import ApiError
from genpix.server.jobs import JobQueue, shutdown_interrupted
from genpix.server.schemas import Img2ImgRequest, Txt2ImgRequest
from genpix.server.settings import RequestSettings

PER_JOB_FIELDS = {"seed", "subseed", "batch_size", "send_images", "save_images"}  # merged jobs may differ in these
RECENT_KEYS = 64  # keys whose last batch size the batcher remembers
BATCH_WIDE_SAMPLERS = ("DPM adaptive",)  # one step size for the whole batch: an image depends on its neighbours

Work = Callable[[list[Any]], list[Any]]  # the jobs' payloads -> their answers (None: run again), never None first


def merge_key(request: Txt2ImgRequest, entry: ModelEntry, settings: RequestSettings) -> str | None:
    """What jobs must agree on to run as one batch, or None for a job that runs alone."""
    if (isinstance(request, Img2ImgRequest) or request.n_iter != 1 or request.enable_hr
            or (request.script_name or "").strip() or (request.refiner_checkpoint or "").strip()):
        return None
    sampler = request.sampler_name or request.sampler_index
    try:
        if sampler and samplers.get(sampler).name in BATCH_WIDE_SAMPLERS:
            return None
    except GenpixError:
        return None  # the binder names the unknown sampler, for this job alone
    return json.dumps({"model": [entry.name, entry.sha256], "settings": asdict(settings),
                       "request": request.model_dump(exclude=PER_JOB_FIELDS)}, sort_keys=True, default=str)


@dataclass(eq=False)
class Member:
    """One queued job of a possible merged batch."""

    key: str
    images: int
    payload: Any
    work: Work
    done: Future = field(default_factory=Future)  # its answer, set by whichever job made its images
    queued: Future | None = None  # its own place in the job queue
    taken: bool = False  # a leader makes its images (its place in the queue is given up)


class Batcher:
    """The board of mergeable waiting jobs in front of a :class:`JobQueue`."""

    def __init__(self, jobs: JobQueue, max_images: int, wait_ms: int = 0) -> None:
        self.jobs, self.max_images, self.wait_s = jobs, max_images, wait_ms / 1000.0
        self._board: list[Member] = []
        self._lock = threading.RLock()  # cancelling a queued job calls back into the board
        self._arrived = threading.Condition(self._lock)  # a job was pinned to the board
        self._last: OrderedDict[str, int] = OrderedDict()  # images of the last batch of each recent key

    async def run(self, kind: str, key: str, images: int, payload: Any, work: Work) -> Any:
        """Queue a mergeable job and wait for its answer: ``work([payload, ...])`` of the batch it
        runs in (503s as :meth:`JobQueue.run`'s)."""
        member = Member(key, images, payload, work)
        with self._lock:  # on the board before a leader can look for it, with its place in the queue
            member.queued = self.jobs.submit(kind, lambda: self._lead(kind, member))
            self._board.append(member)
            self._arrived.notify_all()
        member.queued.add_done_callback(lambda queued: self._queued_ended(member, queued))
        member.done.add_done_callback(lambda done: self._unpin(member) if done.cancelled() else None)
        return await self.jobs.wait(member.done)

    def _unpin(self, member: Member) -> None:
        """The client left (or the server closes) before the job began: off the board and the queue."""
        with self._lock:
            if member in self._board:
                self._board.remove(member)
        member.queued.cancel()

    def _queued_ended(self, member: Member, queued: Future) -> None:
        if queued.cancelled():
            if not member.taken:  # the client left, or close() cancelled the waiting jobs
                member.done.cancel()
        elif queued.exception() is not None and not member.done.done():
            member.done.set_exception(queued.exception())

    def _lead(self, kind: str, member: Member) -> None:
        """In the worker: take the waiting jobs with the member's key and make all their images."""
        with self._lock:
            if member.taken or not member.done.set_running_or_notify_cancel():
                return  # its client left
            member.taken = True
            self._board.remove(member)
            batch = self._gather(member)
        try:
            self._make(kind, batch)
        finally:  # no job of the batch is left without an answer
            for job in batch:
                if not job.done.done():
                    job.done.set_exception(ApiError("the merged batch of this job ended without its images", 500))

    def _make(self, kind: str, batch: list[Member]) -> None:
        while batch:
            self.jobs.merging(len(batch))
            answers = self._attempt(kind, batch)
            rerun = [job for job, answer in zip(batch, answers) if answer is None]
            if not rerun:  # idle before any client holds its answer (and may ask /progress next)
                self.jobs.end()
            for job, answer in zip(batch, answers):
                if answer is not None:
                    self._answer(job, answer)
            batch = rerun
            if batch:  # the leader was interrupted or skipped: the others start again, as a new job
                self.jobs.begin(kind)

    def _gather(self, leader: Member) -> list[Member]:
        """The leader and the waiting jobs with its key; while they make fewer images than the key's
        last batch did, up to ``wait_s`` more for the rest to arrive. Clients that each wait for their
        answer before they ask again send their next requests a few milliseconds apart: without the
        wait the first would run alone and the others as the next batch. A lone client's batches
        have one job, so it never waits."""
        batch = [leader, *self._take(leader, leader.images)]
        images = sum(job.images for job in batch)
        expected = min(self._last.get(leader.key, 0), self.max_images)
        deadline = time.monotonic() + self.wait_s
        while images < expected and (left := deadline - time.monotonic()) > 0:
            self._arrived.wait(left)
            more = self._take(leader, images)
            batch += more
            images += sum(job.images for job in more)
        self._last[leader.key] = images
        self._last.move_to_end(leader.key)
        if len(self._last) > RECENT_KEYS:
            self._last.popitem(last=False)
        return batch

    def _take(self, leader: Member, images: int) -> list[Member]:
        """The waiting jobs with the leader's key, in arrival order, while their images fit beside
        the ``images`` already in the batch."""
        taken = []
        for other in list(self._board):
            if other.key != leader.key or images + other.images > self.max_images:
                continue
            if not other.done.set_running_or_notify_cancel():
                continue  # its client left (its callback takes it off the board)
            other.taken = True
            self._board.remove(other)
            other.queued.cancel()  # out of the queue; the worker runs this one, so it has not begun
            taken.append(other)
            images += other.images
        return taken

    def _attempt(self, kind: str, batch: list[Member]) -> list[Any]:
        """The batch's answers (an exception for a job that failed); after a failed merged call, each
        job alone."""
        try:
            return batch[0].work([job.payload for job in batch])
        except Exception as error:
            if len(batch) == 1:
                return [error]
        answers = []
        for job in batch:
            self.jobs.begin(kind)
            try:
                answers.append(job.work([job.payload])[0])
            except Exception as error:
                answers.append(error)
        return answers

    def _answer(self, job: Member, answer: Any) -> None:
        if isinstance(answer, Exception):
            job.done.set_exception(answer)
        elif self.jobs.closed:  # close() interrupted the call: what it made is partial
            job.done.set_exception(shutdown_interrupted())
        else:
            job.done.set_result(answer)
