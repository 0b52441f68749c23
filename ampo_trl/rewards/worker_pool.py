"""Math-Verify in a small pool of worker processes, with a hard per-item time limit.

Math-Verify's own time limit relies on ``signal.alarm``, which only works in the main thread; TRL may call reward
functions from other threads. So each item is sent to a worker process (one item per worker at a time); a worker
that passes the item's deadline is killed and replaced, and the item scores 0.

``subprocess`` rather than ``multiprocessing``: spawn/forkserver children re-run the parent's ``__main__`` (the
training script, importing torch and trl), which makes every worker slow and heavy; a fresh interpreter that imports
only `ampo_trl.rewards.verifier` starts in about a second. Protocol: JSON lines on stdin/stdout (see
`ampo_trl.rewards.verifier.worker_main`).

This module also keeps the verifier's counters (`verifier_stats`).
"""

from __future__ import annotations

import atexit
import json
import logging
import math
import os
import selectors
import subprocess
import sys
import threading
import time
import warnings
from collections import deque
from collections.abc import Sequence
from typing import Any

logger = logging.getLogger(__name__)

WORKERS_ENV_VAR = "AMPO_VERIFY_WORKERS"

# Generous: under torchrun every rank starts its workers at the same moment, possibly on a slow filesystem.
WORKER_START_TIMEOUT_SECONDS = 120.0
_MAX_DEFAULT_WORKERS = 4

_STATS_LOCK = threading.Lock()
_STATS = {
    "fast_path_matches": 0,  # items decided by normalised string equality, without Math-Verify
    "verified_in_pool": 0,  # items sent to a worker process
    "verified_in_process": 0,  # items verified in this process (switch or fallback)
    "timeouts": 0,  # items that hit the hard time limit (scored 0)
    "worker_crashes": 0,  # workers that died while verifying an item (item scored 0)
    "worker_starts": 0,  # worker processes started (initial ones and replacements)
    "pool_fallbacks": 0,  # batches verified in-process because the pool could not start
}


def _count(key: str, amount: int = 1) -> None:
    with _STATS_LOCK:
        _STATS[key] += amount


def verifier_stats() -> dict[str, Any]:
    """Counters of the answer verifier since the process started (a copy; safe to log).

    Keys: ``fast_path_matches``, ``verified_in_pool``, ``verified_in_process``, ``timeouts``,
    ``worker_crashes``, ``worker_starts``, ``pool_fallbacks``, plus ``pool_workers`` (live workers) and
    ``pool_disabled`` (True after the pool failed to start and verification fell back to in-process).
    """
    with _STATS_LOCK:
        stats: dict[str, Any] = dict(_STATS)
    pool = _POOL
    stats["pool_workers"] = pool.num_alive() if pool is not None and pool.owner_pid == os.getpid() else 0
    stats["pool_disabled"] = _POOL_DISABLED
    return stats


# ``subprocess`` rather than ``multiprocessing``: spawn/forkserver children re-run the parent's ``__main__``
# (the training script, importing torch and trl), which makes every worker slow and heavy; a fresh
# interpreter that imports only this module starts in about a second.
_WORKER_BOOTSTRAP = (
    "import sys; sys.path.insert(0, sys.argv[1]); from ampo_trl.rewards.verifier import worker_main; worker_main()"
)
# The directory holding the `ampo_trl` package, so that workers import this very copy (a checkout or site-packages).
_PACKAGE_PARENT_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class _PoolUnavailableError(RuntimeError):
    pass


class _VerifierWorker:
    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", _WORKER_BOOTSTRAP, _PACKAGE_PARENT_DIR],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            bufsize=0,
        )
        _count("worker_starts")
        self.started_at = time.monotonic()
        self.ready = False
        self.buffer = b""
        self.task_index: int | None = None  # index of the task being verified, None when idle
        self.deadline = math.inf

    def fileno(self) -> int:
        return self.process.stdout.fileno()

    def send(self, message: dict) -> None:
        payload = (json.dumps(message) + "\n").encode()
        while payload:
            written = os.write(self.process.stdin.fileno(), payload)
            payload = payload[written:]

    def read_messages(self) -> list[dict] | None:
        """Messages that have fully arrived; None on EOF (the worker died)."""
        chunk = os.read(self.fileno(), 1 << 16)
        if not chunk:
            return None
        self.buffer += chunk
        *lines, self.buffer = self.buffer.split(b"\n")
        messages = []
        for line in lines:
            try:
                messages.append(json.loads(line))
            except ValueError:  # not a protocol line (should not happen: fd 1 is redirected): ignore it
                logger.debug("Ignoring unexpected verifier worker output: %r", line[:200])
        return messages

    def kill(self) -> None:
        try:
            self.process.kill()
        except OSError:
            pass
        for stream in (self.process.stdin, self.process.stdout):
            try:
                stream.close()
            except OSError:
                pass
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:  # pragma: no cover - a SIGKILLed process always exits
            pass

    def request_exit(self) -> None:
        """EOF on stdin ends the worker loop once its current item is done."""
        try:
            self.process.stdin.close()
        except OSError:
            pass

    def close(self, grace_seconds: float = 1.0) -> None:
        self.request_exit()
        try:
            self.process.wait(timeout=grace_seconds)
        except subprocess.TimeoutExpired:
            pass
        self.kill()


class _VerifierPool:
    def __init__(self, num_workers: int) -> None:
        self.owner_pid = os.getpid()
        self.workers: list[_VerifierWorker] = [_VerifierWorker() for _ in range(num_workers)]

    def num_alive(self) -> int:
        return sum(worker.process.poll() is None for worker in self.workers)

    def _replace(self, worker: _VerifierWorker) -> None:
        worker.kill()
        try:
            self.workers[self.workers.index(worker)] = _VerifierWorker()
        except OSError as error:  # e.g. out of file descriptors: carry on with fewer workers
            logger.warning("Cannot restart a verifier worker: %s", error)
            self.workers.remove(worker)

    def _drop(self, worker: _VerifierWorker) -> None:
        worker.kill()
        self.workers.remove(worker)

    def run(self, tasks: Sequence[tuple[str, str]], timeout: float, results: list[bool | None]) -> None:
        """Verify ``tasks`` (prediction, gold), writing ``results[i]``. One task per worker at a time, so a
        hung task is attributed to exactly one worker, which is killed at its deadline and replaced.

        Raises _PoolUnavailableError when no worker can start (results of finished tasks are kept).
        """
        for worker in list(self.workers):
            if worker.task_index is not None:  # left busy by an interrupted call: its answer is stale
                self._replace(worker)
        pending = deque(range(len(tasks)))
        # Math-Verify's own limit inside the worker is only a backstop (e.g. if this process dies mid-task):
        # it is longer than the hard limit enforced here.
        backstop_limit = math.ceil(timeout) + 1
        with selectors.DefaultSelector() as selector:
            while True:
                now = time.monotonic()
                for worker in list(self.workers):
                    if pending and worker.ready and worker.task_index is None:
                        index = pending.popleft()
                        prediction, gold = tasks[index]
                        try:
                            worker.send(
                                {
                                    "id": index,
                                    "prediction": prediction,
                                    "gold": gold,
                                    "limit": backstop_limit,
                                }
                            )
                        except OSError:  # died while idle: retry the task on a fresh worker
                            pending.appendleft(index)
                            _count("worker_crashes")
                            self._replace(worker)
                            continue
                        worker.task_index, worker.deadline = index, now + timeout
                busy = [worker for worker in self.workers if worker.task_index is not None]
                if not pending and not busy:
                    return
                if not self.workers:
                    raise _PoolUnavailableError("every verifier worker failed to start")
                # Sleep until a message arrives or the nearest deadline (task or start-up) passes.
                deadlines = [worker.deadline for worker in busy]
                deadlines += [
                    worker.started_at + WORKER_START_TIMEOUT_SECONDS for worker in self.workers if not worker.ready
                ]
                wait_seconds = min(1.0, max(0.0, min(deadlines, default=now + 1.0) - now))
                for worker in self.workers:
                    selector.register(worker, selectors.EVENT_READ)
                try:
                    events = selector.select(timeout=wait_seconds)
                finally:
                    for worker in self.workers:
                        selector.unregister(worker)
                for key, _ in events:
                    self._handle_readable(key.fileobj, results)
                self._enforce_deadlines(results)

    def _handle_readable(self, worker: _VerifierWorker, results: list[bool | None]) -> None:
        if worker not in self.workers:
            return
        messages = worker.read_messages()
        if messages is None:  # EOF: the worker exited
            if not worker.ready:  # cannot even start (broken environment): do not respawn forever
                logger.warning("A verifier worker exited during start-up (exit code %s).", worker.process.poll())
                self._drop(worker)
                return
            if worker.task_index is not None:
                results[worker.task_index] = False
                _count("worker_crashes")
            self._replace(worker)
            return
        for message in messages:
            if message.get("ready"):
                worker.ready = True
            elif worker.task_index is not None and message.get("id") == worker.task_index:
                results[worker.task_index] = bool(message.get("ok"))
                worker.task_index, worker.deadline = None, math.inf

    def _enforce_deadlines(self, results: list[bool | None]) -> None:
        now = time.monotonic()
        for worker in list(self.workers):
            if worker.task_index is not None and now >= worker.deadline:
                results[worker.task_index] = False
                _count("timeouts")
                logger.warning("Answer verification exceeded its time limit; scored 0 and restarting the worker.")
                self._replace(worker)
            elif not worker.ready and now >= worker.started_at + WORKER_START_TIMEOUT_SECONDS:
                logger.warning("A verifier worker did not start within %.0f s.", WORKER_START_TIMEOUT_SECONDS)
                self._drop(worker)

    def close(self) -> None:
        for worker in self.workers:
            worker.request_exit()
        deadline = time.monotonic() + 1.0
        for worker in self.workers:
            worker.close(grace_seconds=max(0.0, deadline - time.monotonic()))
        self.workers = []


_POOL: _VerifierPool | None = None
_POOL_LOCK = threading.Lock()
_POOL_DISABLED = False


def _default_num_workers() -> int:
    configured = os.environ.get(WORKERS_ENV_VAR, "").strip()
    if configured:
        try:
            return max(1, int(configured))
        except ValueError:
            warnings.warn(f"Ignoring {WORKERS_ENV_VAR}={configured!r}: not an integer.", stacklevel=3)
    # Under torchrun every local rank has its own pool: share the node's cores between them.
    try:
        local_world_size = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        local_world_size = 1
    return max(1, min(_MAX_DEFAULT_WORKERS, (os.cpu_count() or 1) // local_world_size))


def _get_pool() -> _VerifierPool:
    """The process's pool, created on first use (caller holds ``_POOL_LOCK``)."""
    global _POOL
    if _POOL is not None and _POOL.owner_pid != os.getpid():
        # Inherited through fork: those workers belong to the parent process, leave them alone.
        _POOL = None
    if _POOL is None:
        if os.name != "posix" or not sys.executable:
            raise _PoolUnavailableError("the verifier pool needs a POSIX system and sys.executable")
        try:
            _POOL = _VerifierPool(_default_num_workers())
        except OSError as error:
            raise _PoolUnavailableError(f"cannot start verifier workers: {error}") from error
    return _POOL


def shutdown_verifier_pool() -> None:
    """Stop the verifier worker processes (registered with atexit; the pool restarts on next use).

    Also clears the "pool disabled" state left by a failed start.
    """
    global _POOL, _POOL_DISABLED
    with _POOL_LOCK:
        if _POOL is not None and _POOL.owner_pid == os.getpid():
            _POOL.close()
        _POOL = None
        _POOL_DISABLED = False


atexit.register(shutdown_verifier_pool)


def run_in_pool(tasks: Sequence[tuple[str, str]], timeout: float, results: list[bool | None]) -> str | None:
    """Verify ``tasks`` (prediction, gold) in the worker pool, writing ``results[i]`` (None where not done).

    Returns None, or why the pool is unavailable; then it stays disabled (callers verify in-process) until
    `shutdown_verifier_pool`.
    """
    global _POOL_DISABLED
    with _POOL_LOCK:
        if _POOL_DISABLED:
            return "disabled after an earlier failure to start"
        try:
            pool = _get_pool()
            _count("verified_in_pool", len(tasks))
            pool.run(tasks, timeout, results)
        except _PoolUnavailableError as error:
            _POOL_DISABLED = True
            _count("pool_fallbacks")
            return str(error)
    return None
