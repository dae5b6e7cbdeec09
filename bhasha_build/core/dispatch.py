"""Many requests to one server: a few in flight, stop when the server is gone, stop at once on Ctrl-C.

    Breaker(limit)             failures in a row, over every request in flight (a success resets the
                               count); at `limit` it trips: the caller stops dispatching, and every
                               retry still waiting gives up at once instead of sleeping out its backoff
    retrying(fn, ...)          one request with retries and doubling backoff, given up when the breaker
                               has tripped or the run was cancelled (Ctrl-C). A `gone` error (nothing
                               listens: connection refused) counts at every attempt; any other transient
                               error (a deadline, a 5xx, an answer cut off) counts once, when the
                               request's retries run out: one line the server keeps failing on never
                               stops the run, a server that is gone stops it within a few attempts
    DaemonPool(n)              a thread pool whose workers never hold up the caller or the process's exit:
                               after a trip or a Ctrl-C the caller returns with requests still blocked in a
                               socket read (the process exiting closes their connections, which ends
                               the server's work on them)

Used by `invoke correct` (stages/correct/). Knobs: the callers pass limit, retries and backoff
(correct.stop_after_failures, correct.retries, correct.backoff_s).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

T = TypeVar("T")


class Stopped(Exception):
    """A request not sent because the breaker had tripped or the run was cancelled (it stays to do)."""


class Breaker:
    """Trips after `limit` failed attempts in a row; `stop` is set when it trips or is cancelled."""

    def __init__(self, limit: int) -> None:
        self.limit = max(1, limit)
        self.failures = 0
        self.tripped_at = 0  # the failures in a row that tripped it
        self.reason: str | None = None  # the failure that tripped it (or the cancel reason)
        self.stop = threading.Event()
        self._lock = threading.Lock()

    @property
    def tripped(self) -> bool:
        return self.stop.is_set()

    def success(self) -> None:
        with self._lock:
            self.failures = 0

    def failure(self, why: str) -> None:
        with self._lock:
            self.failures += 1
            if self.failures >= self.limit and not self.stop.is_set():
                self.reason, self.tripped_at = why, self.failures
                self.stop.set()

    def cancel(self, why: str) -> None:
        with self._lock:
            self.reason = self.reason or why
            self.stop.set()


def retrying(fn: Callable[[], T], *, retries: int, backoff_s: float, transient: tuple[type[BaseException], ...],
             breaker: Breaker, gone: tuple[type[BaseException], ...] = ()) -> T:
    """`fn()`, retried `retries` times on `transient` errors with doubling delays from `backoff_s`; the last
    error is raised when the retries run out, the breaker trips, or the run is cancelled meanwhile;
    `Stopped` when it had already happened before the first attempt."""
    delay = backoff_s
    for attempt in range(retries + 1):
        if attempt == 0 and breaker.tripped:
            raise Stopped(breaker.reason or "stopped")
        try:
            result = fn()
        except transient as exc:
            if isinstance(exc, gone) or attempt == retries:
                breaker.failure(str(exc))
            if attempt == retries or breaker.stop.wait(delay):  # wait() is True once stopped: give up now
                raise
            delay *= 2
        else:
            breaker.success()
            return result
    raise AssertionError("unreachable")


class DaemonPool:
    """`n` daemon worker threads taking (future, fn, args) from one queue; `shutdown` never waits."""

    def __init__(self, n: int, name: str = "worker") -> None:
        self._queue: queue.SimpleQueue[tuple[Future[Any], Callable[..., Any], tuple[Any, ...]] | None] = \
            queue.SimpleQueue()
        self._threads = [threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True) for i in range(n)]
        for thread in self._threads:
            thread.start()

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            future, fn, args = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn(*args))
            except BaseException as exc:  # handed to whoever reads the future
                future.set_exception(exc)

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        future: Future[T] = Future()
        self._queue.put((future, fn, args))
        return future

    def shutdown(self, wait: bool = False) -> None:
        """Let the workers end once their current task is done (`wait`: join them)."""
        for _ in self._threads:
            self._queue.put(None)
        if wait:
            for thread in self._threads:
                thread.join()
