"""Normalisation of answers before verification, and the numeric comparison of two plain numbers."""

import pytest
import sympy
from hypothesis import given, settings
from hypothesis import strategies as st

from ampo_trl.rewards import verifier
from ampo_trl.rewards.normalize import exact_match_form, is_list_answer, normalize_answer, normalize_pair


@pytest.mark.parametrize(
    "text, expected",
    [
        ("1.70e4", "1.70\\times 10^{4}"),  # mantissa kept verbatim: its digits are the significant figures
        ("1.7E4", "1.7\\times 10^{4}"),
        ("4.5e33", "4.5\\times 10^{33}"),
        ("1e-3", "1\\times 10^{-3}"),
        ("-2.5e-7", "-2.5\\times 10^{-7}"),
        ("1.7e+4", "1.7\\times 10^{4}"),
        (".5e2", "0.5\\times 10^{2}"),
        ("3e8 m/s", "3\\times 10^{8} m/s"),
        ("(1e-3, 2e-3)", "(1\\times 10^{-3}, 2\\times 10^{-3})"),
        ("1.70 \\cdot 10^4", "1.70\\times 10^4"),
        ("2*10^{3}", "2\\times 10^{3}"),
        ("\\$36", "36"),
        ("\\$18.90", "18.90"),
        ("\\$32,\\!348", "32348"),
        ("$36", "36"),  # one $: a currency sign
        ("$ $36", "36"),  # an empty math pair
        ("a+$ $b", "a+ b"),
        ("32{,}348", "32348"),
        ("1\\,000", "1000"),
        ("11,\\! 111,\\! 111,\\! 100", "11111111100"),
        ("32,348", "32348"),  # the whole answer is one number with thousands commas
        ("$1,234,567.5$", "1234567.5"),
        ("-1./3", "-1/3"),
        ("np.arcsin(10/13)", "\\arcsin(10/13)"),
        ("np.log(2)", "\\ln(2)"),
    ],
)
def test_normalize_rewrites(text, expected):
    assert normalize_answer(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        # Euler's number is never turned into a number
        "e",
        "2e",
        "6.8e",
        "10e",
        "e-3",
        "2e - 1",
        "e^{-3}",
        "2e^{3}",
        "\\frac{1}{2e-3}",
        "x-1e-3",
        # names that contain digits and e
        "x2e3",
        "a_1e5",
        "E_{1},E_{2}",
        # lists stay lists; delimiters in pairs stay
        "1, 234",
        "1,2",
        "(2,251,252)",
        "27,54,108",
        "$a$ $b$",
        "$69$,$84$",
        "1.5",
        "5.",
    ],
)
def test_normalize_leaves_meaningful_notation_alone(text):
    assert normalize_answer(text) == text


def test_plain_commas_of_a_prediction_stay_when_the_gold_is_a_list():
    assert normalize_pair("1,234", "5") == ("1234", "5")
    assert normalize_pair("1,234", "(1, 2)") == ("1,234", "(1, 2)")
    assert normalize_answer("32,348", plain_commas=False) == "32,348"
    assert normalize_answer("32,\\!348", plain_commas=False) == "32348"  # LaTeX separators are never a list
    assert is_list_answer("(0, 1]") and not is_list_answer("1000")


_ANSWER_PIECES = st.sampled_from(
    ["1", "7", "0", ".", ",", "e", "E", "-", "+", "$", "\\$", "\\!", "{,}", "\\,", " ", "{", "}", "^", "x", "np.", "/"]
)


@pytest.mark.parametrize("text", ["$$$1", "$$$$$1", "\\$$$1", "$ $$1"])
@pytest.mark.parametrize("plain_commas", [True, False])
def test_normalize_reaches_a_fixed_point_when_one_rule_exposes_another(text, plain_commas):
    # "$$$1": the currency sign goes first, which leaves the empty pair "$$" for the next pass.
    once = normalize_answer(text, plain_commas=plain_commas)
    assert once == "1"
    assert normalize_answer(once, plain_commas=plain_commas) == once


@settings(max_examples=300, deadline=None, database=None)
@given(st.lists(_ANSWER_PIECES, max_size=14).map("".join))
def test_normalize_is_idempotent_and_total(text):
    once = normalize_answer(text)
    assert normalize_answer(once) == once
    assert isinstance(exact_match_form(once), str)


# ------------------------------------------------------------------------------------------------ numeric verdict
def number(text, exact=False):
    return sympy.Float(text, verifier.EXACT_DIGITS) if not exact else sympy.Rational(text), exact


@pytest.mark.parametrize(
    "gold, prediction, expected",
    [
        (number("17000"), number("17000.0000001"), True),
        (number("17000"), number("17012"), False),
        (number("4.6e-24"), number("5.1e-24"), False),
        (number("1e-7"), number("2e-7"), False),
        (number("1e-7"), number("1.0000001e-7"), True),  # 1e-7 relative: within 1e-6
        (number("1e-7"), number("1.000002e-7"), False),  # 2e-6 relative
        (number("0", True), number("0"), True),
        (number("0", True), number("1e-30"), False),  # relative to zero: only zero
        (number("1000000", True), number("1000001", True), False),  # exact numbers: exactly
        (number("1000000", True), number("1000000.0000001"), True),
    ],
)
def test_numbers_match_relative_tolerance(gold, prediction, expected):
    assert verifier.numbers_match(gold, prediction) is expected
    assert verifier.numbers_match(prediction, gold) is expected  # symmetric


def test_only_plain_real_numbers_get_the_numeric_verdict():
    def parsed(text):
        return verifier._parse_math(normalize_answer(text), 5)

    assert verifier._plain_number(parsed("1.70e4"))[1] is False  # a decimal literal: inexact
    assert verifier._plain_number(parsed("\\sqrt{2}"))[1] is True
    for text in ("x+1", "(1, 2)", "(0, 1]", "x = 3", "62.5\\%", "\\infty", "2+3i", "\\text{Evelyn}"):
        assert verifier._plain_number(parsed(text)) is None, text


def test_containers_of_numbers_are_checked_member_by_member():
    def parsed(text):
        return verifier._parse_math(normalize_answer(text), 5)

    kind, numbers = verifier._container_numbers(parsed("\\{2, 0.5\\}")[0])
    assert kind == "set" and [(float(value), exact) for value, exact in numbers] == [(0.5, False), (2.0, True)]
    assert verifier._container_numbers(parsed("(x, 2)")[0]) is None  # a symbol: Math-Verify alone decides
    assert verifier.containers_match(parsed("(1, 2)"), parsed("(1, 2.0000000001)"))
    assert not verifier.containers_match(parsed("(1, 2)"), parsed("(1, 2.001)"))
    assert not verifier.containers_match(parsed("\\{1, 2\\}"), parsed("\\{2, 1.001\\}"))  # sets: sorted members
    # different kinds or sizes are not this check's business (True: Math-Verify's verdict stands)
    assert verifier.containers_match(parsed("[1, 2]"), parsed("\\{1, 3\\}"))
    assert verifier.containers_match(parsed("(1, 2, 3)"), parsed("(1, 5)"))
    assert verifier.containers_match(parsed("7"), parsed("8"))  # plain numbers are decided before this check
