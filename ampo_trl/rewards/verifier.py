"""`verify_answers`: is a predicted answer mathematically equal to the gold answer?

Per (prediction, gold) pair: empty sides are False; equal canonical forms (`ampo_trl.rewards.normalize`) are True
without calling Math-Verify; every other distinct pair goes to Math-Verify with both strings wrapped in ``$...$``,
under a hard time limit per item (worker processes of `ampo_trl.rewards.worker_pool`; in-process when asked with
``AMPO_VERIFY_IN_PROCESS=1`` or when the pool cannot start). A timed-out item is False.

Only the standard library is imported at module level (Math-Verify lazily): this module is also the entry point of
the verifier worker processes (`worker_main`), which must start fast.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import sys
import threading
import warnings
from collections.abc import Sequence

from . import worker_pool
from .normalize import is_exact_match, strip_math_delimiters
from .worker_pool import _count

logger = logging.getLogger(__name__)

DEFAULT_VERIFY_TIMEOUT_SECONDS = 5.0
IN_PROCESS_ENV_VAR = "AMPO_VERIFY_IN_PROCESS"

TIMEOUT_ENV_VAR = "AMPO_VERIFY_TIMEOUT"


@functools.lru_cache(maxsize=1)
def _extraction_config() -> list:
    from math_verify import ExprExtractionConfig, LatexExtractionConfig

    return [LatexExtractionConfig(), ExprExtractionConfig()]


def _has_symbolic_result(parsed: list) -> bool:
    return any(not isinstance(item, str) for item in parsed)


def _parse_math(text: str, limit_seconds: int | None) -> list:
    """Parse with the string wrapped in ``$...$`` (as the authors' evaluation does); fall back to the raw string.

    Wrapping matters: Math-Verify only reads intervals, sets and most LaTeX inside math mode. The raw
    string is tried only when wrapping yields no symbolic result (e.g. plain-text expressions).
    """
    from math_verify import parse

    core = strip_math_delimiters(text)
    already_delimited = "$" in core or "\\(" in core or "\\[" in core
    parsed = parse(core if already_delimited else f"${core}$", _extraction_config(), parsing_timeout=limit_seconds)
    if not _has_symbolic_result(parsed):
        raw_parsed = parse(core, _extraction_config(), parsing_timeout=limit_seconds)
        if _has_symbolic_result(raw_parsed):
            parsed = raw_parsed
    return parsed


@functools.lru_cache(maxsize=4096)
def _parse_gold(gold: str, limit_seconds: int | None) -> list:
    # Cached: a gold answer is verified once per completion of its group (G times per step).
    return _parse_math(gold, limit_seconds)


def _math_verify_timeout_error() -> type[BaseException]:
    from math_verify.errors import TimeoutException

    return TimeoutException


def _math_verify_match(prediction: str, gold: str, limit_seconds: int | None) -> bool:
    """Math-Verify equivalence of one prediction with one gold. ``limit_seconds`` is Math-Verify's own
    signal-based limit per call (only valid in a main thread); None disables it."""
    from math_verify import verify

    gold_parsed = _parse_gold(gold, limit_seconds)
    if not gold_parsed:
        return False
    prediction_parsed = _parse_math(prediction, limit_seconds)
    if not prediction_parsed:
        return False
    return bool(verify(gold_parsed, prediction_parsed, timeout_seconds=limit_seconds))


def worker_main() -> None:
    """Entry point of a verifier worker process: JSON lines in on stdin, JSON lines out on stdout.

    Protocol: the worker writes ``{"ready": true}`` once Math-Verify is imported and warm, then answers each
    task ``{"id", "prediction", "gold", "limit"}`` with ``{"id", "ok"}``. EOF on stdin ends it.
    """
    import signal

    # Ctrl-C reaches the whole process group; the parent owns shutdown, so the worker must not die noisily.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    protocol_out = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    # Stray prints from libraries must not corrupt the protocol: route fd 1 to stderr.
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    _math_verify_match("1", "1", None)  # import and warm up sympy/latex2sympy before declaring readiness
    protocol_out.write(json.dumps({"ready": True}) + "\n")
    while True:
        line = sys.stdin.readline()
        if not line:
            return
        task = json.loads(line)
        try:
            ok = _math_verify_match(task["prediction"], task["gold"], task["limit"])
        except (Exception, _math_verify_timeout_error()):  # Math-Verify's TimeoutException is a BaseException
            ok = False
        protocol_out.write(json.dumps({"id": task["id"], "ok": bool(ok)}) + "\n")


_FALLBACK_WARNED = False


def _verify_in_process(tasks: Sequence[tuple[str, str]], timeout: float) -> list[bool]:
    """Verify in this process. In the main thread Math-Verify's ``signal.alarm`` limit applies (per
    parse/verify call); elsewhere each item runs in a daemon thread that is abandoned at the deadline
    (it cannot be killed, but the caller gets its answer on time)."""
    _count("verified_in_process", len(tasks))
    if threading.current_thread() is threading.main_thread():
        limit = max(1, math.ceil(timeout))
        verdicts = []
        for prediction, gold in tasks:
            try:
                verdicts.append(_math_verify_match(prediction, gold, limit))
            except (Exception, _math_verify_timeout_error()):
                verdicts.append(False)
        return verdicts

    verdicts = []
    for prediction, gold in tasks:
        outcome: list[bool] = []

        def run(prediction=prediction, gold=gold, outcome=outcome) -> None:
            try:
                outcome.append(_math_verify_match(prediction, gold, None))
            except Exception:
                outcome.append(False)

        thread = threading.Thread(target=run, name="ampo-verify", daemon=True)
        thread.start()
        thread.join(timeout)
        if thread.is_alive():
            _count("timeouts")
            verdicts.append(False)
        else:
            verdicts.append(bool(outcome and outcome[0]))
    return verdicts


def _warn_fallback_once(reason: str) -> None:
    global _FALLBACK_WARNED
    if not _FALLBACK_WARNED:
        _FALLBACK_WARNED = True
        warnings.warn(
            f"AMPO answer verifier: worker pool unavailable ({reason}); verifying in-process instead. The time "
            "limit then uses Math-Verify's signal.alarm in the main thread, or an abandoned helper thread elsewhere.",
            RuntimeWarning,
            stacklevel=4,
        )


def _use_in_process(in_process: bool | None) -> bool:
    if in_process is not None:
        return in_process
    return os.environ.get(IN_PROCESS_ENV_VAR, "").strip().lower() in {"1", "true", "yes", "on"}


def verify_answers(
    predictions: Sequence[str | None],
    golds: Sequence[str],
    timeout: float = DEFAULT_VERIFY_TIMEOUT_SECONDS,
    *,
    in_process: bool | None = None,
) -> list[bool]:
    """Return, per item, whether ``predictions[i]`` is mathematically equal to ``golds[i]``.

    A None/empty prediction or empty gold is False. Normalised string equality is accepted without calling
    Math-Verify; the remaining unique (prediction, gold) pairs go to Math-Verify (gold and prediction parsed
    wrapped in ``$...$``) with a hard limit of ``timeout`` seconds per item: a timed-out item is False.

    ``in_process``: True verifies in this process, False uses the worker pool, None (default) uses the pool
    unless the environment variable ``AMPO_VERIFY_IN_PROCESS=1`` is set. Safe to call from any thread.
    """
    if len(predictions) != len(golds):
        raise ValueError(f"Got {len(predictions)} predictions but {len(golds)} gold answers.")
    if timeout is None or timeout <= 0:
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}.")
    verdicts = [False] * len(predictions)
    # Completions of one group often give the same answer: verify each distinct pair once.
    rows_of_pair: dict[tuple[str, str], list[int]] = {}
    for row, (prediction, gold) in enumerate(zip(predictions, golds)):
        if not isinstance(prediction, str) or not prediction.strip() or not isinstance(gold, str) or not gold.strip():
            continue
        if is_exact_match(prediction, gold):
            verdicts[row] = True
            _count("fast_path_matches")
            continue
        rows_of_pair.setdefault((prediction, gold), []).append(row)
    if not rows_of_pair:
        return verdicts

    tasks = list(rows_of_pair)
    results: list[bool | None] = [None] * len(tasks)
    if not _use_in_process(in_process):
        unavailable = worker_pool.run_in_pool(tasks, timeout, results)
        if unavailable is not None:
            _warn_fallback_once(unavailable)
    remaining = [index for index, result in enumerate(results) if result is None]
    if remaining:
        for index, verdict in zip(remaining, _verify_in_process([tasks[index] for index in remaining], timeout)):
            results[index] = verdict
    for pair, result in zip(tasks, results):
        for row in rows_of_pair[pair]:
            verdicts[row] = bool(result)
    return verdicts


def default_timeout() -> float:
    configured = os.environ.get(TIMEOUT_ENV_VAR, "").strip()
    if configured:
        try:
            value = float(configured)
            if value > 0:
                return value
        except ValueError:
            pass
        warnings.warn(f"Ignoring {TIMEOUT_ENV_VAR}={configured!r}: not a positive number.", stacklevel=3)
    return DEFAULT_VERIFY_TIMEOUT_SECONDS
