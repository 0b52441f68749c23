"""The verifier's self-check over every distinct gold of the shared benchmark files (fast path off), and the
rewritings it uses. The full check runs once per session (about 20 s on two idle cores, in the worker pool)."""

import re
from decimal import Decimal

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sympy
from helpers import shared_benchmark_dir

from ampo_trl.rewards import selfcheck, verifier, verify_answers

TARGET_RATE = 0.995
E_NOTATION_GOLD = re.compile(r"-?\d+(?:\.\d+)?[eE][-+]?\d+")


@pytest.fixture(scope="module")
def golds():
    return selfcheck.benchmark_golds(shared_benchmark_dir())


@pytest.fixture(scope="module")
def report(golds):
    # A generous limit: on a busy machine a slow parse must not pass for a wrong verdict (training uses 5 s).
    return selfcheck.run_selfcheck(golds, timeout=30.0)


def test_every_benchmark_verifies_its_golds_and_a_rewriting(golds, report):
    assert set(report.sources) == {"aime", "aime25", "amc", "math", "minerva", "olympiad_bench"}
    for source, result in report.sources.items():
        assert result.golds == len(golds[source]) > 0
        assert result.rate >= TARGET_RATE, f"{source}: {result}; failures: {report.failures}"
    # every gold is accounted for: a passing gold has no failure line, a failing one at least one
    failing = {(source, gold) for source, gold, _ in report.failures}
    assert sum(result.golds - result.passed for result in report.sources.values()) == len(failing)


def test_minerva_e_notation_golds_accept_both_written_out_forms(golds):
    # Issue 10: Minerva's 58 e-notation golds matched only their own string; the prompts ask for a \times 10^{} form.
    e_golds = [gold for gold in golds["minerva"] if E_NOTATION_GOLD.fullmatch(gold)]
    assert len(e_golds) == 58
    mantissas_and_exponents = [gold.lower().split("e") for gold in e_golds]
    times_forms = [f"{mantissa} \\times 10^{{{int(exponent)}}}" for mantissa, exponent in mantissas_and_exponents]
    plain_forms = [format(Decimal(gold), "f") for gold in e_golds]
    verdicts = verify_answers(times_forms + plain_forms, e_golds + e_golds, fast_path=False)
    assert all(verdicts), [form for form, ok in zip(times_forms + plain_forms, verdicts) if not ok]


def test_no_two_different_numeric_golds_are_within_the_tolerance(golds):
    # Sorted distinct values: if no neighbours match, no pair does (the tolerance is relative to the larger one).
    values = set()
    for gold in (gold for source in golds.values() for gold in source):
        value = selfcheck._decimal_value(verifier.strip_math_delimiters(selfcheck.normalize_answer(gold)))
        if value is not None:
            values.add(value)
    ordered = sorted(values)
    assert len(ordered) > 200
    as_number = [(sympy.Float(str(value), verifier.EXACT_DIGITS), False) for value in ordered]
    close = [
        (str(a), str(b))
        for (a, b), (x, y) in zip(zip(ordered, ordered[1:]), zip(as_number, as_number[1:]))
        if verifier.numbers_match(x, y)
    ]
    assert close == []


@pytest.mark.parametrize(
    "gold, expected",
    [
        ("1.70e4", ["1.7\\times 10^{4}", "17000", "1.7E4", "17{,}000"]),
        ("\\$36", ["3.6\\times 10^{1}", "3.6E1"]),  # "36" is the normalised gold itself: left out
        ("0", ["0.0"]),
        ("4.6e-24", ["0.0000000000000000000000046", "4.6E-24"]),  # 4.6\\times 10^{-24} is the normalised gold
        ("\\frac{1}{2}", ["\\dfrac{1}{2}", "\\left(\\frac{1}{2}\\right)"]),  # sympy prints the gold itself
    ],
)
def test_equivalent_rewritings(gold, expected):
    assert selfcheck.equivalent_rewritings(gold) == expected


def test_rewritings_of_structures_are_not_parenthesised():
    # an interval gets sympy's printed form only, never "\\left((0, 1]\\right)"
    assert selfcheck.equivalent_rewritings("(0, 1]") == ["\\left(0, 1\\right]"]
    assert selfcheck.equivalent_rewritings("x=1,y=2", with_parse=False) == ["x = 1, y = 2"]


def test_command_prints_the_table_and_the_failures(tmp_path, capsys):
    rows = [
        {"data_source": "tiny", "reward_model": {"ground_truth": gold, "style": "rule"}}
        for gold in ["1.70e4", "\\$36", "\\frac{1}{2}", "E_{1},E_{2}"]
    ]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "tiny.parquet")
    assert selfcheck.main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"tiny\s+4\s+4\s+3\s+3\s+75.0%", out), out
    assert "1 failure(s)" in out and "'E_{1},E_{2}': no rewriting verifies" in out
    assert Decimal("17000") == selfcheck._decimal_value("1.70\\times10^{4}")
