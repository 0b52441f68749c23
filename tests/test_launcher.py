"""The shared multi-process launcher (tests/launcher.py): a rank that skips a collective or crashes fails the test
with every rank's log, within the run's time limit, and no worker (nor a worker's child) survives."""

import time
from pathlib import Path

import pytest
from launcher import launch_workers

WORKER = Path(__file__).parent / "distributed" / "collective_worker.py"

pytestmark = pytest.mark.distributed


def _is_gone(pid: int) -> bool:
    """True when `pid` has exited (a zombie waiting for its reaper counts as exited)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return True
    return state in ("Z", "X")


def _all_gone(pids, grace_seconds=10.0) -> bool:
    deadline = time.monotonic() + grace_seconds  # an orphaned child is reaped by init shortly after the kill
    while time.monotonic() < deadline:
        if all(_is_gone(pid) for pid in pids):
            return True
        time.sleep(0.1)
    return all(_is_gone(pid) for pid in pids)


def _pids(pid_dir: Path, *names: str) -> list[int]:
    return [int((pid_dir / f"{name}.pid").read_text()) for name in names]


def test_every_rank_runs_with_the_torchrun_environment(tmp_path):
    launch_workers(WORKER, ["--mode=ok", f"--pid-dir={tmp_path / 'pids'}"], 2, tmp_path / "logs", time_limit=120)
    for rank in range(2):
        assert "all_reduce gave 2.0" in (tmp_path / "logs" / f"rank{rank}.log").read_text()
    assert _all_gone(_pids(tmp_path / "pids", "rank0", "rank1"))


def test_a_rank_that_skips_a_collective_fails_the_test_within_its_limit(tmp_path):
    limit = 45.0
    start = time.monotonic()
    with pytest.raises(pytest.fail.Exception) as failure:
        launch_workers(
            WORKER, ["--mode=hang", f"--pid-dir={tmp_path / 'pids'}"], 2, tmp_path / "logs", time_limit=limit
        )
    elapsed = time.monotonic() - start
    message = str(failure.value)
    assert "hung: ranks [0, 1] still running after the 45 s limit" in message
    # the end of each rank's log says where it was
    assert "rank 0: entering the all_reduce" in message
    assert "rank 1: skipped the all_reduce, busy elsewhere" in message
    # Here the timing is the behaviour under test: gloo would wait an hour, the test ends at its limit.
    assert limit <= elapsed < limit + 60
    # the two workers and the child rank 1 started are all dead, nothing keeps running after the test
    assert _all_gone(_pids(tmp_path / "pids", "rank0", "rank1", "child"))


def test_a_crashing_rank_fails_the_test_with_its_traceback(tmp_path):
    with pytest.raises(pytest.fail.Exception) as failure:
        launch_workers(
            WORKER, ["--mode=crash", f"--pid-dir={tmp_path / 'pids'}"], 2, tmp_path / "logs", time_limit=120
        )
    message = str(failure.value)
    assert "rank 1 exited with 1" in message
    assert "RuntimeError: rank 1: deliberate crash before the all_reduce" in message
    assert _all_gone(_pids(tmp_path / "pids", "rank0", "rank1"))


def test_the_workers_die_when_the_test_itself_is_interrupted(tmp_path, monkeypatch):
    """pytest-timeout's backstop (or Ctrl-C) raises inside the launcher's wait: the workers must die with it."""
    import launcher

    pid_dir = tmp_path / "pids"
    real_sleep = time.sleep

    def interrupted_sleep(seconds):
        if (pid_dir / "rank0.pid").exists() and (pid_dir / "rank1.pid").exists():
            raise KeyboardInterrupt  # what the backstop's signal handler does, in effect
        real_sleep(seconds)

    monkeypatch.setattr(launcher.time, "sleep", interrupted_sleep)
    with pytest.raises(KeyboardInterrupt):
        launch_workers(WORKER, ["--mode=hang", f"--pid-dir={pid_dir}"], 2, tmp_path / "logs", time_limit=120)
    monkeypatch.undo()
    assert _all_gone(_pids(pid_dir, "rank0", "rank1"))
    child = pid_dir / "child.pid"
    assert not child.exists() or _all_gone([int(child.read_text())])
