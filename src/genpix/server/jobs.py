"""The job queue: one worker thread runs generation (and model switches) in arrival order.

The event loop only waits on the worker, so /progress and /interrupt answer while a job runs. A
job reports its steps through :meth:`JobQueue.step`, which is also where an interrupt or skip takes
effect: it raises :class:`Interrupted` or :class:`Skipped` inside the pipeline's callback. A client
that disconnects leaves its job to finish; its result is dropped.

Queued txt2img jobs that agree on everything but their seeds can run as one merged batch
(server/batching.py): :meth:`JobQueue.submit` and :meth:`JobQueue.wait` let it take waiting jobs out
of the queue, and ``merged_jobs`` in the progress state counts the jobs of the running batch.

The queue is bounded: with ``max_waiting`` jobs waiting a new one is refused with a 503 and a
``Retry-After``. :meth:`JobQueue.close` (on SIGINT/SIGTERM) refuses new jobs, cancels the waiting
ones and interrupts the running one; their clients get a 503 that says the server is shutting down.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime
from typing import Any, TypeVar

from genpix.server.errors import ApiError

T = TypeVar("T")
RETRY_AFTER_S = 5  # what a 503 for a full queue asks the client to wait


class Interrupted(Exception):
    """Raised in a step callback after /interrupt: stop the job, keep what is finished."""


class Skipped(Exception):
    """Raised in a step callback after /skip: drop the current batch, go on with the next."""


def shutdown_interrupted() -> ApiError:
    """The answer of a job that close() interrupted: what it made is partial."""
    return ApiError("the server is shutting down; this job was interrupted", 503)


class JobQueue:
    """Runs jobs one at a time off the event loop and keeps sd-webui's progress ``state``."""

    def __init__(self, max_waiting: int = 16) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="genpix-job")
        self._lock = threading.Lock()
        self._render_lock = threading.Lock()  # one preview render at a time; pollers wait for it, then share it
        self.preview_every = 1  # sd-webui's show_progress_every_n_steps (<= 0: no preview while sampling)
        self.renders = 0  # previews rendered so far (each at most once per step)
        self._waiting, self.max_waiting = 0, max_waiting
        self.closed = False
        self._reset("")

    def _reset(self, job: str) -> None:
        self.job, self.job_count, self.job_no = job, 1 if job else 0, 0
        self.merged_jobs = 1 if job else 0  # jobs whose images the running one makes too (server/batching.py)
        self.sampling_step, self.sampling_steps = 0, 0
        self.interrupted = self.skipped = False
        self.job_timestamp = datetime.now().strftime("%Y%m%d%H%M%S") if job else "0"
        self.started = time.monotonic()
        self._preview: tuple[Callable[[Any], list], Any] | None = None
        self._preview_key: tuple | None = None  # (timestamp, batch, step) of the kept preview
        self._rendered: tuple[tuple, Any] | None = None  # (key, encoded image) of the last render

    async def run(self, job: str, fn: Callable[[], T]) -> T:
        """Queue ``fn`` behind the jobs before it and wait for its result (a 503 when the queue is
        full or the server is shutting down)."""
        return await self.wait(self.submit(job, fn))

    def submit(self, job: str, fn: Callable[[], T]) -> Future:
        """Queue ``fn`` behind the jobs before it (a 503 when the queue is full or the server is shutting
        down). Cancelling the future before it begins takes the job out of the queue."""
        with self._lock:
            if self.closed:
                raise ApiError("the server is shutting down; no new jobs are taken", 503)
            if self._waiting >= self.max_waiting:
                raise ApiError(f"the job queue is full ({self._waiting} jobs waiting); retry later", 503,
                               {"Retry-After": str(RETRY_AFTER_S)})
            self._waiting += 1
            future = self._executor.submit(self._run, job, fn)
        future.add_done_callback(self._dropped)
        return future

    async def wait(self, future: Future) -> T:
        """A job's result; a cancelled wait (the client left) cancels the job if it has not begun."""
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            if self.closed:  # cancelled by close(), not by the client going away
                raise ApiError("the server is shutting down; this job was cancelled before it began", 503) from None
            raise

    def _dropped(self, future) -> None:
        if future.cancelled():  # never started, so _run did not count it out of the queue
            with self._lock:
                self._waiting -= 1

    def _run(self, job: str, fn: Callable[[], T]) -> T:
        with self._lock:
            self._waiting -= 1
            self._reset(job)
        try:
            result = fn()
            if self.closed:  # close() interrupted it: what it made is partial
                raise shutdown_interrupted()
            return result
        finally:
            with self._lock:
                self._reset("")

    def close(self) -> None:
        """Stop taking jobs, cancel the waiting ones and interrupt the running one (SIGINT/SIGTERM)."""
        with self._lock:
            self.closed = True
            if self.job:
                self.interrupted = True
        self._executor.shutdown(wait=False, cancel_futures=True)

    def shutdown(self) -> None:
        self.close()

    # --- called by the running job ----------------------------------------------------------------

    def begin(self, job: str) -> None:
        """A new job starts in the running one's turn (a merged batch's jobs run again after an
        interrupt): its own progress, timestamp and interrupt flag."""
        with self._lock:
            if not self.closed:  # close()'s interrupt stays
                self._reset(job)

    def end(self) -> None:
        """The running job has made everything it will answer: the state says idle from now (the
        worker's own end comes after the answers are handed out)."""
        with self._lock:
            self._reset("")

    def merging(self, count: int) -> None:
        """The running job makes the images of ``count`` jobs (itself included)."""
        with self._lock:
            self.merged_jobs = count

    def begin_batches(self, count: int) -> None:
        with self._lock:
            self.job_count, self.job_no = count, 0

    def next_batch(self, number: int) -> None:
        """Batch ``number`` (0-based) starts: a skip of the one before no longer applies."""
        with self._lock:
            self.job_no, self.sampling_step, self.skipped = number, 0, False
        self.check()

    def step(self, step: int, total: int, preview: Callable[[Any], list] | None = None,
             denoised: Any = None) -> None:
        """A sampling step is done; keep what the live preview needs; raise on interrupt or skip."""
        with self._lock:
            self.sampling_step, self.sampling_steps = step, total
            every = self.preview_every
            if preview is not None and denoised is not None and every > 0 and step % every == 0:
                self._preview = (preview, denoised)
                self._preview_key = (self.job_timestamp, self.job_no, step)
        self.check()

    def check(self) -> None:
        if self.interrupted:
            raise Interrupted()
        if self.skipped:
            raise Skipped()

    # --- called from the API -----------------------------------------------------------------------

    def interrupt(self) -> None:
        with self._lock:
            if self.job:
                self.interrupted = True

    def skip(self) -> None:
        with self._lock:
            if self.job:
                self.skipped = True

    def current_image(self, encode: Callable[[Any], T]) -> T | None:
        """The live preview of the latest kept step, ``encode``-d (e.g. to base64 PNG): rendered once per
        step, whatever the number of pollers (sd-webui's /progress current_image); None before the first."""
        with self._render_lock:
            with self._lock:
                preview, key, rendered = self._preview, self._preview_key, self._rendered
            if preview is None:
                return None
            if rendered is not None and rendered[0] == key:
                return rendered[1]
            render, denoised = preview
            image = encode(render(denoised)[0])
            with self._lock:
                self._rendered, self.renders = (key, image), self.renders + 1
            return image

    @property
    def busy(self) -> bool:
        return bool(self.job) or self._waiting > 0

    def progress(self) -> tuple[float, float, dict[str, Any], tuple | None]:
        """(progress 0..1, eta in seconds, state, preview) as sd-webui's /progress computes them
        (the preview unrendered: :meth:`current_image` renders it once per step)."""
        with self._lock:
            state = {"skipped": self.skipped, "interrupted": self.interrupted, "job": self.job,
                     "job_count": self.job_count, "job_timestamp": self.job_timestamp, "job_no": self.job_no,
                     "sampling_step": self.sampling_step, "sampling_steps": self.sampling_steps,
                     "queued": self._waiting, "merged_jobs": self.merged_jobs}
            preview, elapsed = self._preview, time.monotonic() - self.started
        if not state["job"]:
            return 0.0, 0.0, state, None
        done = state["job_no"] / state["job_count"]
        if state["sampling_steps"]:
            done += state["sampling_step"] / state["sampling_steps"] / state["job_count"]
        progress = min(1.0, 0.01 + done)
        return progress, elapsed / progress - elapsed, state, preview
