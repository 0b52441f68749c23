"""Reward functions for AMPO (arXiv 2510.02227), with TRL's reward-function signature.

Every reward function is ``f(completions, **kwargs) -> list[float]``. ``completions`` is a list of strings
(plain-text prompts) or a list of conversations ``[[{"role": "assistant", "content": "..."}], ...]``
(conversational prompts); dataset columns arrive in ``kwargs`` as per-row lists.

Formulas (``a`` = the extracted answer, see :func:`extract_answer`; ``y*`` = the gold answer):

- ``accuracy_reward``            acc = 1 if Math-Verify says ``a == y*`` else 0 (no answer / timeout -> 0)
- ``format_reward``              fmt = 1 iff exactly one ``<answer>`` and one ``</answer>``, opening first
- ``ampo_reward``                r   = 0.9 * acc + 0.1 * fmt (the paper's training reward)
- ``repetition_penalty_reward``  -1 if some window of 10 consecutive words occurs >= 10 times, else 0;
                                 rows whose ``completion_source`` is not ``"policy"`` get 0
- ``multiple_choice_reward``     1 iff the option letter (A-J) in ``a`` equals the gold letter

Gold answers come from the column ``answer`` (preferred), else ``solution`` (TRL convention), else
``reward_model`` (a dict per row with key ``ground_truth``: the authors' parquet schema).

Math verification runs in a small pool of worker processes with a hard per-item time limit, because
Math-Verify's own time limit relies on ``signal.alarm``, which only works in the main thread. A timed-out
item scores 0, its worker is killed and replaced. ``AMPO_VERIFY_IN_PROCESS=1`` verifies in-process instead.
This module imports only the standard library at import time (Math-Verify is imported lazily): it is also
the entry point of the verifier worker processes, which must start fast.
"""

from __future__ import annotations

import atexit
import functools
import importlib
import json
import logging
import math
import os
import re
import selectors
import subprocess
import sys
import threading
import time
import warnings
from collections import Counter, deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any

__all__ = [
    "ACCURACY_WEIGHT",
    "FORMAT_WEIGHT",
    "GOLD_ANSWER_COLUMNS",
    "MULTIPLE_CHOICE_LETTERS",
    "REPETITION_MIN_REPEATS",
    "REPETITION_PENALTY",
    "REPETITION_WINDOW_WORDS",
    "REWARD_FUNCS",
    "accuracy_reward",
    "ampo_reward",
    "completion_text",
    "extract_answer",
    "extract_boxed",
    "extract_choice_letter",
    "format_reward",
    "gold_answers_from_kwargs",
    "make_repetition_penalty_reward",
    "multiple_choice_reward",
    "repetition_penalty_reward",
    "resolve_reward_funcs",
    "shutdown_verifier_pool",
    "verifier_stats",
    "verify_answers",
]

logger = logging.getLogger(__name__)

# ----------------------------------------------------------------------------------------------------------
# Constants
# ----------------------------------------------------------------------------------------------------------

ACCURACY_WEIGHT = 0.9
FORMAT_WEIGHT = 0.1

REPETITION_WINDOW_WORDS = 10
REPETITION_MIN_REPEATS = 10
REPETITION_PENALTY = -1.0
POLICY_SOURCE = "policy"

MULTIPLE_CHOICE_LETTERS = "ABCDEFGHIJ"

GOLD_ANSWER_COLUMNS = ("answer", "solution", "reward_model")

DEFAULT_VERIFY_TIMEOUT_SECONDS = 5.0
IN_PROCESS_ENV_VAR = "AMPO_VERIFY_IN_PROCESS"
WORKERS_ENV_VAR = "AMPO_VERIFY_WORKERS"
TIMEOUT_ENV_VAR = "AMPO_VERIFY_TIMEOUT"
# Generous: under torchrun every rank starts its workers at the same moment, possibly on a slow filesystem.
WORKER_START_TIMEOUT_SECONDS = 120.0
_MAX_DEFAULT_WORKERS = 4

ANSWER_OPEN_TAG = "<answer>"
ANSWER_CLOSE_TAG = "</answer>"

# ----------------------------------------------------------------------------------------------------------
# Completion text and answer extraction
# ----------------------------------------------------------------------------------------------------------


def _message_content_to_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, (list, tuple)):  # multimodal content: [{"type": "text", "text": ...}, ...]
        parts = []
        for part in content:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, dict) and isinstance(part.get("text"), str):
                parts.append(part["text"])
        return "".join(parts)
    return str(content)


def completion_text(completion: Any) -> str:
    """Return the text of one completion: a string as is, or the assistant messages of a conversation.

    A conversation (list of ``{"role", "content"}`` dicts) yields the contents of its assistant messages
    joined by newlines (tool messages are skipped); ``None`` yields ``""``.
    """
    if completion is None:
        return ""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        return _message_content_to_text(completion.get("content"))
    if isinstance(completion, (list, tuple)):
        parts = [
            _message_content_to_text(message.get("content"))
            for message in completion
            if isinstance(message, dict) and message.get("role", "assistant") == "assistant"
        ]
        return "\n".join(parts)
    return str(completion)


_BOXED_COMMAND = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")


def _balanced_brace_content(text: str, open_brace_index: int) -> str | None:
    """Content between ``text[open_brace_index] == "{"`` and its matching ``}``; None if unbalanced."""
    depth = 0
    index = open_brace_index
    while index < len(text):
        char = text[index]
        if char == "\\":  # ``\{``, ``\}`` and ``\\`` are escaped characters, not grouping braces
            index += 2
            continue
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return text[open_brace_index + 1 : index]
        index += 1
    return None


def extract_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` / ``\\fbox{...}`` (balanced braces) or ``\\boxed x`` in ``text``.

    Returns None when there is none, when the last one is unbalanced (e.g. truncated), or when it is empty.
    Only the last command is considered: an earlier box is usually an intermediate result.
    """
    if not isinstance(text, str):
        return None
    matches = list(_BOXED_COMMAND.finditer(text))
    if not matches:
        return None
    index = matches[-1].end()
    after_command = index
    while index < len(text) and text[index].isspace():
        index += 1
    if index < len(text) and text[index] == "{":
        content = _balanced_brace_content(text, index)
    elif index > after_command:  # ``\boxed 5``: a single token after whitespace
        content = re.match(r"[^\s$]*", text[index:]).group(0)
    else:
        content = None
    if content is None:
        return None
    content = content.strip()
    return content or None


def extract_answer(text: str) -> str | None:
    """Return the model's final answer from a completion text, or None if there is no usable one.

    Rule (spec section 3): the stripped content of the LAST ``<answer>...</answer>`` pair; if that content
    contains ``\\boxed{x}`` the (last) ``x`` is returned. Without any answer pair, the content of the last
    ``\\boxed{...}`` in the text is used. Empty answers and unbalanced boxes give None.
    """
    if not isinstance(text, str):
        return None
    close_index = text.rfind(ANSWER_CLOSE_TAG)
    open_index = text.rfind(ANSWER_OPEN_TAG, 0, close_index) if close_index != -1 else -1
    if open_index != -1:
        content = text[open_index + len(ANSWER_OPEN_TAG) : close_index].strip()
        if not content:
            return None
        if _BOXED_COMMAND.search(content):
            return extract_boxed(content)
        return content
    return extract_boxed(text)


# ----------------------------------------------------------------------------------------------------------
# Gold answers
# ----------------------------------------------------------------------------------------------------------


def gold_answer_text(value: Any) -> str:
    """One gold answer (str, number, list, numpy value, ``{"ground_truth": ...}``, a worked solution) as the answer
    string Math-Verify parses. The single normaliser for every place that reads a ground truth."""
    if value is None:
        return ""
    if hasattr(value, "tolist") and not isinstance(value, str):  # numpy scalars/arrays from parquet
        value = value.tolist()
    if isinstance(value, dict) and "ground_truth" in value:
        return gold_answer_text(value["ground_truth"])
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isfinite(value) and value.is_integer():
            return str(int(value))
        return repr(value)
    if isinstance(value, (list, tuple, set, frozenset)):
        items = [gold_answer_text(item) for item in value]
        items = [item for item in items if item]
        # A one-element list is just the answer; several elements are read as a set/tuple answer "a, b".
        return items[0] if len(items) == 1 else ", ".join(items)
    text = str(value).strip()
    if "####" in text:  # GSM8K-style "reasoning #### 42"
        text = text.rsplit("####", 1)[1].strip()
    if ANSWER_OPEN_TAG in text or _BOXED_COMMAND.search(text):  # a worked solution: keep its final answer
        text = extract_answer(text) or text
    return text


def gold_answers_from_kwargs(kwargs: dict[str, Any], num_completions: int | None = None) -> list[str]:
    """Return the gold answers (one string per row) from TRL reward kwargs.

    Looks, in order, at the columns ``answer`` (list of str), ``solution`` (TRL convention) and
    ``reward_model`` (list of dicts with key ``ground_truth``). Raises ValueError when none is present,
    when a ``reward_model`` row has no ``ground_truth``, or when the column length differs from
    ``num_completions``.
    """
    column_name = next((name for name in GOLD_ANSWER_COLUMNS if kwargs.get(name) is not None), None)
    if column_name is None:
        raise ValueError(
            "No gold answer column found in the reward function's keyword arguments. Add one of these dataset "
            f"columns: {', '.join(repr(name) for name in GOLD_ANSWER_COLUMNS)} ('answer' or 'solution' holding the "
            "answer, or 'reward_model' holding a dict with key 'ground_truth'). Columns received: "
            f"{sorted(kwargs)}."
        )
    rows = list(kwargs[column_name])
    if column_name == "reward_model":
        for row in rows:
            if not (isinstance(row, dict) and "ground_truth" in row):
                raise ValueError(
                    f"Column 'reward_model' must hold dicts with key 'ground_truth'; got {type(row).__name__}: "
                    f"{str(row)[:200]!r}."
                )
        rows = [row["ground_truth"] for row in rows]
    if num_completions is not None and len(rows) != num_completions:
        raise ValueError(f"Column {column_name!r} has {len(rows)} rows but there are {num_completions} completions.")
    return [gold_answer_text(row) for row in rows]


# ----------------------------------------------------------------------------------------------------------
# Cheap exact-match fast path
# ----------------------------------------------------------------------------------------------------------

_TEXT_WRAPPER = re.compile(r"\\(?:text|textbf|textrm|textit|mathrm|mathbf|mbox)\s*\{([^{}]*)\}")
_LEFT_RIGHT = re.compile(r"\\(?:left|right)(?![A-Za-z])")
_THIN_SPACES = re.compile(r"\\[!,;:]|\\ ")
_DISPLAY_FRAC = re.compile(r"\\[dt]frac(?![A-Za-z])")
_WHITESPACE_RUN = re.compile(r"\s+")


def _strip_math_delimiters(text: str) -> str:
    """Remove delimiters that wrap the whole string: ``$x$``, ``$$x$$``, ``\\(x\\)``, ``\\[x\\]``."""
    text = text.strip()
    while True:
        if len(text) >= 2 and text.startswith("$") and text.endswith("$") and "$" not in text[1:-1].strip("$"):
            text = text.strip("$").strip()
        elif text.startswith("\\(") and text.endswith("\\)") or text.startswith("\\[") and text.endswith("\\]"):
            text = text[2:-2].strip()
        else:
            return text


def _normalize_for_exact_match(text: str) -> str:
    """A conservative canonical form: two answers with equal forms are the same answer."""
    text = _strip_math_delimiters(text)
    if text.startswith(("\\boxed", "\\fbox")):
        boxed = extract_boxed(text)
        if boxed is not None and re.fullmatch(r"\\(?:boxed|fbox)\s*\{.*\}", text, flags=re.DOTALL):
            text = boxed
    text = _LEFT_RIGHT.sub("", text)
    text = _THIN_SPACES.sub("", text)
    text = _DISPLAY_FRAC.sub(r"\\frac", text)
    previous = None
    while previous != text:  # nested wrappers: \text{\textbf{x}}
        previous = text
        text = _TEXT_WRAPPER.sub(r"\1", text)
    # Whitespace between two digits is kept ("1 2" is not "12"); elsewhere it carries no meaning.
    text = _WHITESPACE_RUN.sub(
        lambda match: (
            " "
            if match.start() > 0
            and match.end() < len(match.string)
            and match.string[match.start() - 1].isdigit()
            and match.string[match.end()].isdigit()
            else ""
        ),
        text,
    )
    if text.endswith(".") and not text.endswith(".."):
        text = text[:-1]
    return text


def _is_exact_match(prediction: str, gold: str) -> bool:
    normalized_prediction = _normalize_for_exact_match(prediction)
    return bool(normalized_prediction) and normalized_prediction == _normalize_for_exact_match(gold)


# ----------------------------------------------------------------------------------------------------------
# Math-Verify (runs in a worker process, or in-process when asked / as a fallback)
# ----------------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _extraction_config() -> list:
    from math_verify import ExprExtractionConfig, LatexExtractionConfig

    return [LatexExtractionConfig(), ExprExtractionConfig()]


def _has_symbolic_result(parsed: list) -> bool:
    return any(not isinstance(item, str) for item in parsed)


def _parse_math(text: str, limit_seconds: int | None) -> list:
    """Parse with the string wrapped in ``$...$`` (spec section 3); fall back to the raw string.

    Wrapping matters: Math-Verify only reads intervals, sets and most LaTeX inside math mode. The raw
    string is tried only when wrapping yields no symbolic result (e.g. plain-text expressions).
    """
    from math_verify import parse

    core = _strip_math_delimiters(text)
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


# Test-only hook: when ``_test_sleep_seconds > 0``, a prediction containing the marker makes the verifier
# sleep that long before verifying, so tests can exercise the time limit deterministically.
_TEST_SLEEP_MARKER = "<ampo-verifier-test-sleep>"
_test_sleep_seconds = 0.0


def _test_sleep_for(prediction: str) -> float:
    return _test_sleep_seconds if _test_sleep_seconds > 0 and _TEST_SLEEP_MARKER in prediction else 0.0


def _verifier_worker_main() -> None:
    """Entry point of a verifier worker process: JSON lines in on stdin, JSON lines out on stdout.

    Protocol: the worker writes ``{"ready": true}`` once Math-Verify is imported and warm, then answers each
    task ``{"id", "prediction", "gold", "limit", "sleep"}`` with ``{"id", "ok"}``. EOF on stdin ends it.
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
        if task.get("sleep"):
            time.sleep(task["sleep"])
        try:
            ok = _math_verify_match(task["prediction"], task["gold"], task["limit"])
        except (Exception, _math_verify_timeout_error()):  # Math-Verify's TimeoutException is a BaseException
            ok = False
        protocol_out.write(json.dumps({"id": task["id"], "ok": bool(ok)}) + "\n")


# ----------------------------------------------------------------------------------------------------------
# Statistics
# ----------------------------------------------------------------------------------------------------------

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


# ----------------------------------------------------------------------------------------------------------
# Worker pool with a hard per-item time limit
# ----------------------------------------------------------------------------------------------------------

# ``subprocess`` rather than ``multiprocessing``: spawn/forkserver children re-run the parent's ``__main__``
# (the training script, importing torch and trl), which makes every worker slow and heavy; a fresh
# interpreter that imports only this module starts in about a second.
_WORKER_BOOTSTRAP = (
    "import sys; sys.path.insert(0, sys.argv[1]); "
    "from ampo_trl.rewards import _verifier_worker_main; _verifier_worker_main()"
)
_PACKAGE_PARENT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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
                                    "sleep": _test_sleep_for(prediction),
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
_FALLBACK_WARNED = False


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


def _verify_in_process(tasks: Sequence[tuple[str, str]], timeout: float) -> list[bool]:
    """Verify in this process. In the main thread Math-Verify's ``signal.alarm`` limit applies (per
    parse/verify call); elsewhere each item runs in a daemon thread that is abandoned at the deadline
    (it cannot be killed, but the caller gets its answer on time)."""
    _count("verified_in_process", len(tasks))
    if threading.current_thread() is threading.main_thread():
        limit = max(1, math.ceil(timeout))
        verdicts = []
        for prediction, gold in tasks:
            if _test_sleep_for(prediction) > timeout:  # test hook: a sleep beyond the limit stands for a hang
                _count("timeouts")
                verdicts.append(False)
                continue
            try:
                verdicts.append(_math_verify_match(prediction, gold, limit))
            except (Exception, _math_verify_timeout_error()):
                verdicts.append(False)
        return verdicts

    verdicts = []
    for prediction, gold in tasks:
        outcome: list[bool] = []

        def run(prediction=prediction, gold=gold, outcome=outcome) -> None:
            time.sleep(_test_sleep_for(prediction))
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
    global _POOL_DISABLED
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
        if _is_exact_match(prediction, gold):
            verdicts[row] = True
            _count("fast_path_matches")
            continue
        rows_of_pair.setdefault((prediction, gold), []).append(row)
    if not rows_of_pair:
        return verdicts

    tasks = list(rows_of_pair)
    results: list[bool | None] = [None] * len(tasks)
    if not _use_in_process(in_process):
        with _POOL_LOCK:
            if not _POOL_DISABLED:
                try:
                    pool = _get_pool()
                    _count("verified_in_pool", len(tasks))
                    pool.run(tasks, timeout, results)
                except _PoolUnavailableError as error:
                    _POOL_DISABLED = True
                    _count("pool_fallbacks")
                    _warn_fallback_once(str(error))
    remaining = [index for index, result in enumerate(results) if result is None]
    if remaining:
        for index, verdict in zip(remaining, _verify_in_process([tasks[index] for index in remaining], timeout)):
            results[index] = verdict
    for pair, result in zip(tasks, results):
        for row in rows_of_pair[pair]:
            verdicts[row] = bool(result)
    return verdicts


def _default_timeout() -> float:
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


# ----------------------------------------------------------------------------------------------------------
# Reward functions
# ----------------------------------------------------------------------------------------------------------


def accuracy_reward(completions: list, **kwargs) -> list[float]:
    """Accuracy reward: 1.0 iff the extracted answer verifies against the gold answer, else 0.0.

    acc = 1[MathVerify(extract_answer(completion), gold)]. A missing answer, malformed text or a verification
    timeout (``AMPO_VERIFY_TIMEOUT`` seconds, default 5) scores 0.0. The gold answer comes from the column
    ``answer``, else ``solution``, else ``reward_model["ground_truth"]``; ValueError if none is present.
    """
    golds = gold_answers_from_kwargs(kwargs, len(completions))
    predictions = [extract_answer(completion_text(completion)) for completion in completions]
    return [1.0 if correct else 0.0 for correct in verify_answers(predictions, golds, timeout=_default_timeout())]


def _has_valid_answer_format(text: str) -> bool:
    return (
        text.count(ANSWER_OPEN_TAG) == 1
        and text.count(ANSWER_CLOSE_TAG) == 1
        and text.index(ANSWER_OPEN_TAG) < text.index(ANSWER_CLOSE_TAG)
    )


def format_reward(completions: list, **kwargs) -> list[float]:
    """Format reward: 1.0 iff the completion has exactly one ``<answer>`` and exactly one ``</answer>``,
    the opening tag before the closing one; else 0.0. fmt = 1[#open = 1 and #close = 1 and open < close]."""
    return [1.0 if _has_valid_answer_format(completion_text(completion)) else 0.0 for completion in completions]


def ampo_reward(completions: list, **kwargs) -> list[float]:
    """The paper's training reward in one function: r = 0.9 * acc + 0.1 * fmt (values 0, 0.1, 0.9, 1.0).

    Equivalent to ``reward_funcs=[accuracy_reward, format_reward]`` with ``reward_weights=[0.9, 0.1]``.
    """
    accuracies = accuracy_reward(completions, **kwargs)
    formats = format_reward(completions, **kwargs)
    return [ACCURACY_WEIGHT * accuracy + FORMAT_WEIGHT * fmt for accuracy, fmt in zip(accuracies, formats)]


def _has_repeated_word_window(text: str, window: int, min_repeats: int) -> bool:
    words = text.split()
    if len(words) < window:
        return False
    window_counts = Counter(tuple(words[start : start + window]) for start in range(len(words) - window + 1))
    return max(window_counts.values()) >= min_repeats


def make_repetition_penalty_reward(
    window: int = REPETITION_WINDOW_WORDS,
    min_repeats: int = REPETITION_MIN_REPEATS,
    penalty: float = REPETITION_PENALTY,
) -> Callable[..., list[float]]:
    """Build a repetition penalty reward: ``penalty`` (default -1.0) when some window of ``window``
    consecutive whitespace-separated words occurs at least ``min_repeats`` times (overlapping occurrences
    count), else 0.0. Rows whose ``completion_source`` kwarg names another source than ``"policy"`` (teacher
    rows; None counts as policy) get 0.0,
    as in the released code, which penalises on-policy rows only. The function is named
    ``repetition_penalty_reward`` (TRL's metric name) whatever the parameters."""
    if window < 1 or min_repeats < 1:
        raise ValueError(f"window and min_repeats must be >= 1, got window={window}, min_repeats={min_repeats}.")

    def repetition_penalty_reward(completions: list, **kwargs) -> list[float]:
        sources = kwargs.get("completion_source")
        rewards = []
        for row, completion in enumerate(completions):
            # A missing source (None) means an ordinary sampled row; only a named non-policy source is exempt.
            if sources is not None and sources[row] not in (None, POLICY_SOURCE):
                rewards.append(0.0)
            elif _has_repeated_word_window(completion_text(completion), window, min_repeats):
                rewards.append(float(penalty))
            else:
                rewards.append(0.0)
        return rewards

    repetition_penalty_reward.__doc__ = (
        f"Repetition penalty: {penalty} when a window of {window} consecutive words occurs >= {min_repeats} "
        "times in the completion, else 0.0; rows whose completion_source is not 'policy' get 0.0."
    )
    return repetition_penalty_reward


repetition_penalty_reward = make_repetition_penalty_reward()


_MARKUP_WRAPPER = re.compile(r"\\(?:boxed|fbox|text|textbf|textrm|textit|mathrm|mathbf|mbox)\s*\{([^{}]*)\}")
_LONE_LETTER = re.compile(r"[(\[]?\s*([A-Ja-j])\s*[)\]]?\s*[.:)]?")
_LEADING_OPTION = re.compile(r"(?:(?i:option|choice)\s+)?[(\[]?([A-J])(?:[)\]][.:]?|[.:,]|\s+(?i:is)\b)(?=\s|$)")
_ANSWER_PHRASE = re.compile(r"(?i:answer|option|choice)(?:\s+(?i:is))?\s*[:=]?\s*[(\[]?([A-J])(?![A-Za-z0-9'])")
_PARENTHESISED_LETTER = re.compile(r"[(\[]([A-J])[)\]]")
# A capital A-J standing alone, used to detect answers naming several options ("B, C", "(A) or (B)"). A letter
# followed by a lower-case word is read as English ("A triangle", "I think"), not as an option.
_STANDALONE_LETTER = re.compile(r"(?<![A-Za-z0-9'\\])([A-J])(?![A-Za-z0-9'])(?!\s+[a-z])")


def extract_choice_letter(answer: str | None) -> str | None:
    """The option letter (upper case, A-J) stated by an answer string, or None if there is none or it is
    ambiguous. Accepted: ``B``, ``(B)``, ``B.``, ``B)``, ``\\boxed{B}``, ``\\text{(B)}``, ``B. 42``,
    ``Option B: 42``, ``The answer is B``. Conservative: a capital letter inside a word never counts, and a
    lower-case letter counts only when it is the whole answer; an answer naming several options is None."""
    if not isinstance(answer, str):
        return None
    text = _strip_math_delimiters(answer).replace("**", "").replace("__", "")
    previous = None
    while previous != text:
        previous = text
        text = _MARKUP_WRAPPER.sub(r"\1", text)
    text = text.replace("$", "").strip()
    for pattern, finder in (
        (_LONE_LETTER, "full"),
        (_LEADING_OPTION, "start"),
        (_ANSWER_PHRASE, "last"),
        (_PARENTHESISED_LETTER, "unique"),
    ):
        if finder == "full":
            match = pattern.fullmatch(text)
            letters = [match.group(1)] if match else []
        elif finder == "start":
            match = pattern.match(text)
            letters = [match.group(1)] if match else []
        elif finder == "last":
            letters = pattern.findall(text)[-1:]
        else:
            letters = sorted(set(pattern.findall(text)))
            letters = letters if len(letters) == 1 else []
        if letters:
            letter = letters[0].upper()
            # Naming several options must not earn the reward of the right one ("A, B, C, D" is not an answer).
            other_letters = set(_STANDALONE_LETTER.findall(text)) - {letter}
            return None if other_letters else letter
    return None


_WARNED_BAD_CHOICE_GOLDS: set[str] = set()


def multiple_choice_reward(completions: list, **kwargs) -> list[float]:
    """Multiple-choice accuracy (ARC-c, GPQA, MMLU-Pro): 1.0 iff the option letter in the extracted answer
    equals the gold letter (case-insensitive), else 0.0. mc = 1[letter(extract_answer(completion)) == gold].

    Gold columns as for :func:`accuracy_reward`; a gold that is not a letter A-J scores 0.0 (warned once).
    """
    golds = gold_answers_from_kwargs(kwargs, len(completions))
    rewards = []
    for completion, gold in zip(completions, golds):
        gold_letter = extract_choice_letter(gold)
        if gold_letter is None:
            if gold not in _WARNED_BAD_CHOICE_GOLDS:
                _WARNED_BAD_CHOICE_GOLDS.add(gold)
                warnings.warn(
                    f"multiple_choice_reward: gold answer {gold!r} is not an option letter A-J.", stacklevel=2
                )
            rewards.append(0.0)
            continue
        predicted_letter = extract_choice_letter(extract_answer(completion_text(completion)))
        rewards.append(1.0 if predicted_letter == gold_letter else 0.0)
    return rewards


# ----------------------------------------------------------------------------------------------------------
# Registry
# ----------------------------------------------------------------------------------------------------------

REWARD_FUNCS: dict[str, Callable[..., list[float]]] = {
    "accuracy": accuracy_reward,
    "format": format_reward,
    "ampo": ampo_reward,
    "repetition_penalty": repetition_penalty_reward,
    "multiple_choice": multiple_choice_reward,
}


def _import_dotted(path: str) -> Any:
    """Import ``package.module:attribute`` or ``package.module.attribute`` (attribute may be dotted)."""
    if ":" in path:
        module_name, attribute_path = path.split(":", 1)
        candidates = [(module_name, attribute_path)]
    else:
        # Try the longest importable module prefix first: "a.b.c.f" -> ("a.b.c", "f"), ("a.b", "c.f"), ...
        parts = path.split(".")
        candidates = [(".".join(parts[:cut]), ".".join(parts[cut:])) for cut in range(len(parts) - 1, 0, -1)]
    errors = []
    for module_name, attribute_path in candidates:
        try:
            target = importlib.import_module(module_name)
        except ImportError as error:
            errors.append(f"{module_name}: {error}")
            continue
        try:
            for attribute in attribute_path.split("."):
                target = getattr(target, attribute)
        except AttributeError as error:
            errors.append(f"{module_name}: {error}")
            continue
        return target
    raise ValueError(f"Cannot import reward function {path!r} ({'; '.join(errors)}).")


def resolve_reward_funcs(names: Iterable[str | Callable] | str) -> list[Callable[..., list[float]]]:
    """Turn reward names into functions for ``GRPOTrainer(reward_funcs=...)``.

    ``names``: a list, or one string (comma/space separated). Each item is a short name from
    :data:`REWARD_FUNCS` (``accuracy``, ``format``, ``ampo``, ``repetition_penalty``, ``multiple_choice``;
    the function names such as ``accuracy_reward`` work too), a dotted import path ``package.module.function``
    or ``package.module:function``, or already a callable. Unknown names raise ValueError.
    """
    if isinstance(names, str):
        names = [name for name in re.split(r"[,\s]+", names) if name]
    by_function_name = {function.__name__: function for function in REWARD_FUNCS.values()}
    functions = []
    for name in names:
        if callable(name):
            functions.append(name)
            continue
        if name in REWARD_FUNCS:
            functions.append(REWARD_FUNCS[name])
        elif name in by_function_name:
            functions.append(by_function_name[name])
        elif "." in name or ":" in name:
            function = _import_dotted(name)
            if not callable(function):
                raise ValueError(f"Reward {name!r} resolved to a non-callable {type(function).__name__}.")
            functions.append(function)
        else:
            raise ValueError(
                f"Unknown reward function {name!r}. Known short names: {', '.join(sorted(REWARD_FUNCS))}. For a "
                "custom reward give a dotted import path such as 'my_package.my_module.my_reward' or "
                "'my_package.my_module:my_reward' (a function f(completions, **kwargs) -> list[float])."
            )
    return functions
