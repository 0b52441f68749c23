r"""Self-check of the answer verifier on benchmark golds: ``python -m ampo_trl.rewards.selfcheck [DIRECTORY]``.

For every distinct gold answer of every ``data_source`` in the parquet files of ``DIRECTORY`` (default
``$AMPO_BENCHMARK_DIR``; column ``reward_model.ground_truth``, read with `ampo_trl.answers.gold_answer_text`):

1. ``<answer>GOLD</answer>``, extracted as a completion is, must verify against the gold, and
2. at least one **equivalent rewriting** of the gold (`equivalent_rewritings`) must verify against the gold,

both with the exact-string fast path switched off (``verify_answers(..., fast_path=False)``), so Math-Verify and the
numeric comparison decide every item. A gold passes when both hold; the table gives the rate per benchmark and the
command lists every gold that fails.

Rewritings are made from the gold's text first, so a misreading cannot confirm itself (Math-Verify read ``1.70e4``
as 1.7·e·4, which equals itself); the two that use the gold's parse come last:

* a number (also ``\$36``, ``32,\!348``, ``1.70e4``): the ``m\times 10^{k}`` form, the plain decimal, the ``mEk``
  form and, for integers from 1000, the ``{,}``-grouped form (each only when it differs from the gold's text);
* anything else: ``\frac`` written ``\dfrac``; spaces after commas and around ``=`` and ``+``; then, when the gold
  parses to an expression (not a set, interval, tuple or equation), the gold in ``\left( \right)``; and last the
  LaTeX that sympy prints for the gold's parse.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path

from ..answers import extract_answer, gold_answer_text
from .normalize import normalize_answer, strip_math_delimiters
from .verifier import DEFAULT_VERIFY_TIMEOUT_SECONDS, verify_answers

BENCHMARK_DIR_ENV_VAR = "AMPO_BENCHMARK_DIR"

_NUMBER_LITERAL = re.compile(
    r"(?P<sign>[-+]?)(?P<mantissa>\d+(?:\.\d*)?|\.\d+)(?:\\times10\^(?:\{(?P<braced>[-+]?\d+)\}|(?P<bare>\d)))?"
)
_SPACED_OPERATORS = re.compile(r"\s*([=+,])\s*")


def benchmark_golds(directory: str | os.PathLike) -> dict[str, list[str]]:
    """``{data_source: distinct gold texts}`` over every ``*.parquet`` file of ``directory`` (golds in first-seen
    order, data sources sorted)."""
    import pyarrow.parquet as pq

    files = sorted(Path(directory).glob("*.parquet"))
    if not files:
        raise FileNotFoundError(f"{directory}: no parquet files (set {BENCHMARK_DIR_ENV_VAR} or pass a directory).")
    golds: dict[str, dict[str, None]] = {}
    for path in files:
        table = pq.read_table(path, columns=["data_source", "reward_model"])
        for row in table.to_pylist():
            gold = gold_answer_text(row["reward_model"])
            if gold:
                golds.setdefault(row["data_source"], {})[gold] = None
    return {source: list(golds[source]) for source in sorted(golds)}


def _decimal_value(text: str) -> Decimal | None:
    match = _NUMBER_LITERAL.fullmatch(text.replace(" ", ""))
    if match is None:
        return None
    exponent = match["braced"] or match["bare"] or "0"
    try:
        return Decimal(match["sign"] + match["mantissa"]).scaleb(int(exponent))
    except InvalidOperation:
        return None


def _number_rewritings(value: Decimal) -> list[str]:
    if value == 0:
        return ["0.0", "0"]
    sign, digits, exponent = value.normalize().as_tuple()
    power = len(digits) + exponent - 1
    fraction = "".join(map(str, digits[1:]))
    mantissa = ("-" if sign else "") + str(digits[0]) + (f".{fraction}" if fraction else "")
    forms = [f"{mantissa}\\times 10^{{{power}}}", format(value, "f"), f"{mantissa}E{power}"]
    if value == value.to_integral_value() and abs(value) >= 1000:
        forms.append(f"{int(value):,}".replace(",", "{,}"))
    return forms


def _parsed_expression(gold: str):
    """The first symbolic result of Math-Verify's parse of a normalised gold, or None (main thread only: it uses the
    signal time limit)."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None
    from .verifier import _parse_math

    try:
        parsed = _parse_math(gold, int(DEFAULT_VERIFY_TIMEOUT_SECONDS))
    except BaseException as error:  # Math-Verify's TimeoutException is a BaseException
        if isinstance(error, (KeyboardInterrupt, SystemExit)):
            raise
        return None
    return next((item for item in parsed if not isinstance(item, str)), None)


def _printed_latex(expression) -> str | None:
    import sympy

    from .verifier import _with_time_limit

    try:
        return _with_time_limit(sympy.latex, int(DEFAULT_VERIFY_TIMEOUT_SECONDS))(expression)
    except BaseException as error:
        if isinstance(error, (KeyboardInterrupt, SystemExit)):
            raise
        return None


def equivalent_rewritings(gold: str, *, with_parse: bool = True) -> list[str]:
    """Strings that mean the same as ``gold`` but are written differently (see the module docstring), most literal
    first; none equals the gold's text. ``with_parse=False`` leaves out the forms that need the gold's parse
    (parenthesised, sympy-printed)."""
    normalized = normalize_answer(gold)
    core = strip_math_delimiters(normalized)
    value = _decimal_value(core)
    if value is not None:
        forms = _number_rewritings(value)
    else:
        forms = []
        if "\\frac" in gold:
            forms.append(re.sub(r"\\frac(?![A-Za-z])", r"\\dfrac", gold))
        forms.append(_SPACED_OPERATORS.sub(lambda match: f" {match[1]} " if match[1] != "," else ", ", gold).strip())
        if with_parse:
            import sympy

            expression = _parsed_expression(normalized)
            if isinstance(expression, sympy.Expr):  # an expression, not a set, interval, tuple or equation
                forms.append(f"\\left({core}\\right)")
            if expression is not None:
                forms.append(_printed_latex(expression) or "")
    kept: dict[str, None] = {}
    for form in forms:
        if form.strip() and form not in (gold, normalized, core):
            kept[form] = None
    return list(kept)


@dataclass
class SourceResult:
    """Counts of one data source: distinct golds, golds whose tagged self verifies, golds with a verified rewriting,
    golds passing both."""

    golds: int = 0
    tagged: int = 0
    rewritten: int = 0
    passed: int = 0

    @property
    def rate(self) -> float:
        return self.passed / self.golds if self.golds else 0.0


@dataclass
class SelfCheckReport:
    """Per data source counts and every failing gold as ``(data_source, gold, what failed)``."""

    sources: dict[str, SourceResult] = field(default_factory=dict)
    failures: list[tuple[str, str, str]] = field(default_factory=list)

    def table(self) -> str:
        from ..reporting import format_percent, format_table

        rows = [
            [source, result.golds, result.tagged, result.rewritten, result.passed, format_percent(result.rate)]
            for source, result in self.sources.items()
        ]
        headers = ["benchmark", "distinct golds", "<answer>GOLD</answer>", "a rewriting", "both", "rate"]
        return format_table(headers, rows)


def run_selfcheck(
    golds_by_source: dict[str, Sequence[str]],
    timeout: float = DEFAULT_VERIFY_TIMEOUT_SECONDS,
    *,
    in_process: bool | None = None,
) -> SelfCheckReport:
    """Check every gold (see the module docstring) with the fast path off; rewritings are tried in order, each
    batch only for the golds still without a verified one."""
    items = [(source, gold) for source, golds in golds_by_source.items() for gold in golds]
    golds = [gold for _, gold in items]
    tagged = [extract_answer(f"<answer>{gold}</answer>") for gold in golds]
    tagged_ok = verify_answers(tagged, golds, timeout, in_process=in_process, fast_path=False)
    # Text-only rewritings first; the parse-based ones only for golds none of those verified (parsing costs time).
    rewritings = [equivalent_rewritings(gold, with_parse=False) for gold in golds]
    with_parse = [False] * len(items)
    rewritten_ok = [False] * len(items)
    next_form = [0] * len(items)
    while True:
        pending = [i for i, ok in enumerate(rewritten_ok) if not ok and next_form[i] < len(rewritings[i])]
        if not pending:
            extend = [i for i, ok in enumerate(rewritten_ok) if not ok and not with_parse[i]]
            for i in extend:
                with_parse[i] = True
                rewritings[i] += [form for form in equivalent_rewritings(golds[i]) if form not in rewritings[i]]
            pending = [i for i in extend if next_form[i] < len(rewritings[i])]
            if not pending:
                break
        predictions = [rewritings[i][next_form[i]] for i in pending]
        targets = [golds[i] for i in pending]
        verdicts = verify_answers(predictions, targets, timeout, in_process=in_process, fast_path=False)
        for i, ok in zip(pending, verdicts):
            rewritten_ok[i] = ok
            next_form[i] += 1
    report = SelfCheckReport(sources={source: SourceResult() for source in golds_by_source})
    for (source, gold), self_ok, rewrite_ok, forms in zip(items, tagged_ok, rewritten_ok, rewritings):
        result = report.sources[source]
        result.golds += 1
        result.tagged += self_ok
        result.rewritten += rewrite_ok
        result.passed += self_ok and rewrite_ok
        if not self_ok:
            report.failures.append((source, gold, "<answer>GOLD</answer> does not verify"))
        if not rewrite_ok:
            tried = "; ".join(forms) if forms else "no rewriting"
            report.failures.append((source, gold, f"no rewriting verifies (tried: {tried})"))
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ampo_trl.rewards.selfcheck",
        description="Verify every distinct benchmark gold against itself and an equivalent rewriting (fast path off).",
    )
    parser.add_argument("directory", nargs="?", default=os.environ.get(BENCHMARK_DIR_ENV_VAR), help="parquet files")
    parser.add_argument("--timeout", type=float, default=DEFAULT_VERIFY_TIMEOUT_SECONDS, help="seconds per item")
    args = parser.parse_args(argv)
    if not args.directory:
        parser.error(f"pass the directory of the benchmark parquet files or set {BENCHMARK_DIR_ENV_VAR}.")
    report = run_selfcheck(benchmark_golds(args.directory), args.timeout)
    print(report.table())
    if report.failures:
        print(f"\n{len(report.failures)} failure(s):")
        for source, gold, reason in report.failures:
            print(f"  {source}: {gold!r}: {reason}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
