"""The one way the tests start several processes (2-process DDP / ZeRO-3 / evaluation runs): a hang or a crash on
any rank becomes a test failure that shows the end of every worker's log.

Why not `torchrun`: torch's elastic agent starts each worker in a session of its own, so killing the launcher's
process group leaves the workers alive, and as they keep the launcher's output pipe open, `communicate()` then
blocks until someone kills them by hand. Here every worker is started directly with the environment `torchrun`
would give it (`RANK`, `WORLD_SIZE`, `MASTER_ADDR` ...), in its own session whose id is recorded, writing to its
own log file (no pipe to block on). Whatever happens (success, a rank exiting with an error, the time limit, an
exception in the test itself, pytest-timeout's backstop) every worker's session is killed with SIGKILL before
`launch_workers` returns, so children the workers started (e.g. verifier pool processes) die too.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

LOG_TAIL_LINES = 40
POLL_SECONDS = 0.2


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def worker_environment(rank: int, world_size: int, port: int, extra: dict[str, str] | None = None) -> dict[str, str]:
    """What `torchrun --standalone` gives a worker, plus quiet single-threaded offline defaults."""
    return {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "HF_HUB_OFFLINE": "1",
        "PYTHONUNBUFFERED": "1",  # the log tail must show the last thing a hung rank did
        "RANK": str(rank),
        "LOCAL_RANK": str(rank),
        "GROUP_RANK": "0",
        "ROLE_RANK": str(rank),
        "WORLD_SIZE": str(world_size),
        "LOCAL_WORLD_SIZE": str(world_size),
        "ROLE_WORLD_SIZE": str(world_size),
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
        **(extra or {}),
    }


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    if not path.exists():
        return "(no log written)"
    text = path.read_text(errors="replace").splitlines()
    return "\n".join(text[-lines:]) or "(empty log)"


def _kill_sessions(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        try:
            os.killpg(process.pid, signal.SIGKILL)  # the worker's session: the worker and everything it started
        except (ProcessLookupError, PermissionError):
            pass
    for process in processes:
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL is not ignorable
            pass


def launch_workers(
    script: Path | str,
    script_args: list[str],
    num_processes: int,
    log_dir: Path,
    time_limit: float,
    env: dict[str, str] | None = None,
    description: str = "",
) -> None:
    """Run `python script *script_args` as `num_processes` ranks; return when all exited with 0.

    Fails the calling test (with the last lines of each rank's log) as soon as one rank exits with an error, or
    when the ranks have not all finished after `time_limit` seconds. Every worker is dead when this returns.
    """
    log_dir = Path(log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    logs = [log_dir / f"rank{rank}.log" for rank in range(num_processes)]
    name = description or f"{num_processes}-process run of {Path(script).name} {' '.join(script_args)}"
    processes: list[subprocess.Popen] = []
    try:
        for rank in range(num_processes):
            with open(logs[rank], "wb") as log:  # the child keeps its own descriptor
                processes.append(
                    subprocess.Popen(
                        [sys.executable, str(script), *script_args],
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        env=worker_environment(rank, num_processes, port, env),
                        start_new_session=True,
                    )
                )
        deadline = time.monotonic() + time_limit
        while True:
            codes = [process.poll() for process in processes]
            if all(code == 0 for code in codes):
                return
            failed = [rank for rank, code in enumerate(codes) if code not in (None, 0)]
            timed_out = time.monotonic() > deadline
            if failed or timed_out:
                _kill_sessions(processes)
                if failed:
                    verdict = ", ".join(f"rank {rank} exited with {codes[rank]}" for rank in failed)
                    headline = f"{name} failed ({verdict}; the other ranks were killed)"
                else:
                    running = [rank for rank, code in enumerate(codes) if code is None]
                    headline = (
                        f"{name} hung: ranks {running} still running after the {time_limit:.0f} s limit "
                        "(killed; a rank probably skipped a collective the others entered)"
                    )
                tails = "\n".join(
                    f"----- last lines of rank {rank} ({logs[rank]}):\n{log_tail(logs[rank])}"
                    for rank in range(num_processes)
                )
                pytest.fail(f"{headline}\n{tails}", pytrace=False)
            time.sleep(POLL_SECONDS)
    finally:
        _kill_sessions(processes)
