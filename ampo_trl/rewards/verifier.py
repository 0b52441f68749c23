"""`verify_answers`: is a predicted answer mathematically equal to the gold answer?

Per (prediction, gold) pair:

1. empty sides are False;
2. both are normalised (`ampo_trl.rewards.normalize.normalize_pair`: currency, stray ``$ $``, thousands separators,
   scientific notation);
3. equal canonical forms (the exact-match fast path, `ampo_trl.rewards.normalize.is_exact_match`) are True without
   calling Math-Verify (``fast_path=False`` skips this step);
4. every other distinct pair is parsed by Math-Verify with both strings wrapped in ``$...$``, under a hard time
   limit per item (worker processes of `ampo_trl.rewards.worker_pool`; in-process when asked with
   ``AMPO_VERIFY_IN_PROCESS=1`` or when the pool cannot start). A timed-out item is False;
5. when both parse to a plain real number (no symbol, set, interval, relation, matrix or percent), **this module
   decides** (`numbers_match`), for True and for False:

   * both exact (integers, fractions, roots, pi ...: no decimal literal): equal iff equal (rationals exactly, other
     numbers to 50 significant digits);
   * otherwise (a decimal or scientific literal on either side): equal iff ``|p - g| <= 1e-6 * max(|p|, |g|)``
     (`RELATIVE_TOLERANCE`).

   Why: Math-Verify's tolerance is absolute and depends on the parse (6 decimal places for a lone float, a chop
   below about 1e-16 for an expression), so ``0.0000001`` equalled ``0.0000002`` and ``5.1\\times 10^{-24}``
   equalled ``4.6\\times 10^{-24}``. A relative tolerance of 1e-6 accepts representation differences only
   (``1.70e4`` = ``17000`` = ``1.7\\cdot 10^4``, ``142`` = ``142.0``, ``\\pi`` = ``3.14159265``): among the 394
   distinct numeric golds of the shared MATH-500 and Minerva files, no two different numbers are within 1e-6 (nor
   1e-4) of each other; at 1e-2, 80 ordered pairs would be (``42`` ~ ``41.8``). It is not a rounding rule: ``17012``
   for ``1.70e4`` is wrong, as in Qwen2.5-Math's grader (1e-4 relative). Exact numbers compare exactly because a
   relative tolerance would equate 1000000 and 1000001;

6. anything else (expressions, sets, intervals, equations, text) is decided by Math-Verify's ``verify``, with one
   check after it: when it says True and both sides are the same kind of container of plain numbers (tuples or
   intervals: endpoints in order; sets: sorted elements; matrices: entries; equations: right-hand sides), the
   numbers must also pass `numbers_match` pairwise (`containers_match`). Its absolute tolerance otherwise made
   ``(0.0000001, 2)`` equal ``(0.0000002, 2)``. The check can only turn True into False.

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
from .normalize import is_exact_match, normalize_answer, normalize_pair, strip_math_delimiters
from .worker_pool import _count

logger = logging.getLogger(__name__)

DEFAULT_VERIFY_TIMEOUT_SECONDS = 5.0
IN_PROCESS_ENV_VAR = "AMPO_VERIFY_IN_PROCESS"

TIMEOUT_ENV_VAR = "AMPO_VERIFY_TIMEOUT"

#: Two numbers of which at least one is inexact (a decimal or scientific literal) are equal iff
#: ``|p - g| <= RELATIVE_TOLERANCE * max(|p|, |g|)`` (see the module docstring for why 1e-6).
RELATIVE_TOLERANCE = 1e-6
#: Exact numbers that are not both rational are compared numerically to this many significant digits.
EXACT_DIGITS = 50


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
    # An escaped dollar (``\\$36``) is a currency sign, not a delimiter.
    already_delimited = "$" in core.replace("\\$", "") or "\\(" in core or "\\[" in core
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


def _first_symbolic(parsed: list):
    """The first mathematical object of a Math-Verify parse (its other items are strings), or None."""
    return next((item for item in parsed if not isinstance(item, str)), None)


def _plain_number(parsed: list):
    """``(value, exact)`` of the first symbolic parse when it is a plain real number, else None. ``value`` is a sympy
    Float with `EXACT_DIGITS` digits; ``exact`` is False when a decimal literal (a sympy Float) is part of it."""
    return _number_of(_first_symbolic(parsed))


def _number_of(expression):
    """``(value, exact)`` of one sympy object when it is a plain real number, else None (see `_plain_number`)."""
    import sympy
    from sympy.matrices import MatrixBase

    if not isinstance(expression, sympy.Expr) or isinstance(expression, MatrixBase):
        return None  # sets, intervals, tuples, relations, matrices
    if expression.free_symbols or not expression.is_number or expression.has(sympy.UnevaluatedExpr):
        return None  # symbols; Math-Verify writes a percent as an unevaluated 1/100
    if expression.has(sympy.oo, -sympy.oo, sympy.zoo, sympy.nan):
        return None
    value = expression.evalf(EXACT_DIGITS)
    if not isinstance(value, sympy.Float):  # complex (a + b*I) or not evaluable
        return None
    return value, not expression.has(sympy.Float)


def numbers_match(gold: tuple, prediction: tuple) -> bool:
    """The verdict for two plain numbers ``(value, exact)`` (see the module docstring): exact ones compare exactly,
    others within `RELATIVE_TOLERANCE`."""
    (gold_value, gold_exact), (prediction_value, prediction_exact) = gold, prediction
    scale = max(abs(gold_value), abs(prediction_value))
    difference = abs(gold_value - prediction_value)
    if gold_exact and prediction_exact:
        return bool(difference <= scale * 10 ** (2 - EXACT_DIGITS))
    return bool(difference <= scale * RELATIVE_TOLERANCE)


def _container_numbers(expression) -> tuple[str, list[tuple]] | None:
    """``(kind, numbers)`` of a container whose every member is a plain number (`_number_of`), else None: interval
    endpoints and tuple items in order, set elements sorted, matrix entries row by row, an equation's right side."""
    import sympy
    from sympy.matrices import MatrixBase

    if isinstance(expression, sympy.Interval):
        kind, members = "interval", [expression.start, expression.end]
    elif isinstance(expression, sympy.Tuple):
        kind, members = "tuple", list(expression.args)
    elif isinstance(expression, sympy.FiniteSet):
        kind, members = "set", list(expression.args)
    elif isinstance(expression, MatrixBase):
        kind, members = f"matrix{expression.shape}", list(expression)
    elif isinstance(expression, sympy.Eq):
        kind, members = "equation", [expression.rhs]
    else:
        return None
    numbers = [_number_of(member) for member in members]
    if not numbers or any(number is None for number in numbers):
        return None
    if kind == "set":
        numbers.sort(key=lambda number: number[0])
    return kind, numbers


def containers_match(gold_parsed: list, prediction_parsed: list) -> bool:
    """False when both first parses are containers of the same kind and size whose numbers differ pairwise beyond
    `numbers_match`; True otherwise (other pairs are left to Math-Verify's verdict)."""
    gold, prediction = (_container_numbers(_first_symbolic(parsed)) for parsed in (gold_parsed, prediction_parsed))
    if gold is None or prediction is None or gold[0] != prediction[0] or len(gold[1]) != len(prediction[1]):
        return True
    return all(numbers_match(g, p) for g, p in zip(gold[1], prediction[1], strict=True))


def _numbers_verdict(gold_parsed: list, prediction_parsed: list) -> bool | None:
    """`numbers_match` when both parses are plain numbers, else None (Math-Verify decides)."""
    import sympy

    gold_expression, prediction_expression = _first_symbolic(gold_parsed), _first_symbolic(prediction_parsed)
    if isinstance(gold_expression, sympy.Rational) and isinstance(prediction_expression, sympy.Rational):
        return gold_expression == prediction_expression  # integers and fractions: exact
    gold_number = _plain_number(gold_parsed)
    if gold_number is None:
        return None
    prediction_number = _plain_number(prediction_parsed)
    if prediction_number is None:
        return None
    return numbers_match(gold_number, prediction_number)


def _with_time_limit(function, limit_seconds: int | None):
    """``function`` under Math-Verify's ``signal.alarm`` limit (main thread only); unchanged when None."""
    if limit_seconds is None:
        return function
    from math_verify.utils import timeout

    return timeout(timeout_seconds=limit_seconds)(function)


def _math_verify_match(prediction: str, gold: str, limit_seconds: int | None) -> bool:
    """Whether ``prediction`` equals ``gold``: normalisation, Math-Verify parsing, then `numbers_match` for two plain
    numbers or Math-Verify's ``verify`` for anything else (steps 2, 4-6 of the module docstring; no fast path).
    ``limit_seconds`` is the ``signal.alarm`` limit per parse / comparison (only valid in a main thread); None
    disables it."""
    from math_verify import verify

    prediction, gold = normalize_pair(prediction, gold)
    gold_parsed = _parse_gold(gold, limit_seconds)
    if not gold_parsed:
        return False
    # The same normalised string parses the same: reuse the gold's (cached) parse.
    prediction_parsed = gold_parsed if prediction == gold else _parse_math(prediction, limit_seconds)
    if not prediction_parsed:
        return False
    verdict = _with_time_limit(_numbers_verdict, limit_seconds)(gold_parsed, prediction_parsed)
    if verdict is not None:
        return verdict
    if not verify(gold_parsed, prediction_parsed, timeout_seconds=limit_seconds):
        return False
    return _with_time_limit(containers_match, limit_seconds)(gold_parsed, prediction_parsed)


def _gold_parses(gold: str, limit_seconds: int | None) -> bool:
    """Whether Math-Verify parses the normalised gold into a mathematical object (not only a string)."""
    return _has_symbolic_result(_parse_gold(normalize_answer(gold), limit_seconds))


def _run_task(prediction: str | None, gold: str, limit_seconds: int | None) -> bool:
    """One task of the pool or of in-process verification: a match, or (prediction None) a parse check of the gold."""
    if prediction is None:
        return _gold_parses(gold, limit_seconds)
    return _math_verify_match(prediction, gold, limit_seconds)


def worker_main() -> None:
    """Entry point of a verifier worker process: JSON lines in on stdin, JSON lines out on stdout.

    Protocol: the worker writes ``{"ready": true}`` once Math-Verify is imported and warm, then answers each
    task ``{"id", "prediction", "gold", "limit"}`` with ``{"id", "ok"}`` (`_run_task`: a null prediction asks
    whether the gold parses). EOF on stdin ends it.
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
            ok = _run_task(task["prediction"], task["gold"], task["limit"])
        except (Exception, _math_verify_timeout_error()):  # Math-Verify's TimeoutException is a BaseException
            ok = False
        protocol_out.write(json.dumps({"id": task["id"], "ok": bool(ok)}) + "\n")


_FALLBACK_WARNED = False


def _verify_in_process(tasks: Sequence[tuple[str | None, str]], timeout: float) -> list[bool]:
    """Verify in this process. In the main thread Math-Verify's ``signal.alarm`` limit applies (per
    parse/verify call); elsewhere each item runs in a daemon thread that is abandoned at the deadline
    (it cannot be killed, but the caller gets its answer on time)."""
    _count("verified_in_process", len(tasks))
    if threading.current_thread() is threading.main_thread():
        limit = max(1, math.ceil(timeout))
        verdicts = []
        for prediction, gold in tasks:
            try:
                verdicts.append(_run_task(prediction, gold, limit))
            except (Exception, _math_verify_timeout_error()):
                verdicts.append(False)
        return verdicts

    verdicts = []
    for prediction, gold in tasks:
        outcome: list[bool] = []

        def run(prediction=prediction, gold=gold, outcome=outcome) -> None:
            try:
                outcome.append(_run_task(prediction, gold, None))
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


def _check_timeout(timeout: float) -> None:
    if timeout is None or timeout <= 0:
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}.")


def _run_tasks(tasks: list[tuple[str | None, str]], timeout: float, in_process: bool | None) -> list[bool]:
    """Run tasks in the worker pool (or in-process, see `verify_answers`); one verdict per task."""
    results: list[bool | None] = [None] * len(tasks)
    if not _use_in_process(in_process):
        unavailable = worker_pool.run_in_pool(tasks, timeout, results)
        if unavailable is not None:
            _warn_fallback_once(unavailable)
    remaining = [index for index, result in enumerate(results) if result is None]
    if remaining:
        for index, verdict in zip(remaining, _verify_in_process([tasks[index] for index in remaining], timeout)):
            results[index] = verdict
    return [bool(result) for result in results]


def verify_answers(
    predictions: Sequence[str | None],
    golds: Sequence[str],
    timeout: float = DEFAULT_VERIFY_TIMEOUT_SECONDS,
    *,
    in_process: bool | None = None,
    fast_path: bool = True,
) -> list[bool]:
    """Return, per item, whether ``predictions[i]`` is mathematically equal to ``golds[i]``.

    A None/empty prediction or empty gold is False. Both sides are normalised; equal canonical forms are accepted
    without calling Math-Verify (``fast_path=False`` sends them to Math-Verify too, e.g. to test the verifier); the
    remaining unique (prediction, gold) pairs go to Math-Verify and, for two plain numbers, to `numbers_match`
    (see the module docstring), with a hard limit of ``timeout`` seconds per item: a timed-out item is False.

    ``in_process``: True verifies in this process, False uses the worker pool, None (default) uses the pool
    unless the environment variable ``AMPO_VERIFY_IN_PROCESS=1`` is set. Safe to call from any thread.
    """
    if len(predictions) != len(golds):
        raise ValueError(f"Got {len(predictions)} predictions but {len(golds)} gold answers.")
    _check_timeout(timeout)
    verdicts = [False] * len(predictions)
    # Completions of one group often give the same answer: verify each distinct pair once.
    rows_of_pair: dict[tuple[str, str], list[int]] = {}
    for row, (prediction, gold) in enumerate(zip(predictions, golds)):
        if not isinstance(prediction, str) or not prediction.strip() or not isinstance(gold, str) or not gold.strip():
            continue
        if fast_path and is_exact_match(*normalize_pair(prediction, gold)):
            verdicts[row] = True
            _count("fast_path_matches")
            continue
        rows_of_pair.setdefault((prediction, gold), []).append(row)
    if not rows_of_pair:
        return verdicts
    tasks = list(rows_of_pair)
    for pair, result in zip(tasks, _run_tasks(tasks, timeout, in_process)):
        for row in rows_of_pair[pair]:
            verdicts[row] = result
    return verdicts


def golds_parse(
    golds: Sequence[str], timeout: float = DEFAULT_VERIFY_TIMEOUT_SECONDS, *, in_process: bool | None = None
) -> list[bool]:
    """Per gold, whether Math-Verify parses it (normalised) into a mathematical object within ``timeout`` seconds.

    A gold that does not (``\\text{Evelyn}``, ``E_{1},E_{2}``, a timeout) can only be matched by an identical
    answer string, so such golds are worth a warning (`ampo_trl.pool.validate_pool_dataset(check_golds=True)`).
    Each distinct gold is parsed once, in the worker pool like `verify_answers`. Empty golds give False."""
    _check_timeout(timeout)
    distinct = list(dict.fromkeys(gold for gold in golds if isinstance(gold, str) and gold.strip()))
    if not distinct:
        return [False] * len(golds)
    parses = dict(zip(distinct, _run_tasks([(None, gold) for gold in distinct], timeout, in_process)))
    return [parses.get(gold, False) if isinstance(gold, str) else False for gold in golds]


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
