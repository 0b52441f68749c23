"""Tests for ampo_trl.rewards on real answer strings (CPU only, a few seconds)."""

import math
import subprocess
import sys
import threading
import time
import warnings

import pytest

import ampo_trl.rewards as rewards
from ampo_trl.rewards import (
    REWARD_FUNCS,
    accuracy_reward,
    ampo_reward,
    completion_text,
    extract_answer,
    extract_choice_letter,
    format_reward,
    gold_answers_from_kwargs,
    make_repetition_penalty_reward,
    multiple_choice_reward,
    normalize,
    repetition_penalty_reward,
    resolve_reward_funcs,
    verifier,
    verifier_stats,
    verify_answers,
    worker_pool,
)


def tagged(answer: str) -> str:
    return f"Let me work through it step by step.\nSo the result follows.\n<answer>{answer}</answer>"


def conversation(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


def stat_delta(before: dict, key: str) -> int:
    return verifier_stats()[key] - before[key]


# A prediction containing this marker makes Math-Verify hang (sleep a minute), standing for a pathological input.
SLEEP_MARKER = "<verifier-test-sleep>"
SLOW_WORKER_BOOTSTRAP = (
    "import sys, time; sys.path.insert(0, sys.argv[1]); "
    "from ampo_trl.rewards import verifier; real = verifier._math_verify_match; "
    f"verifier._math_verify_match = lambda p, g, l: time.sleep(60) if {SLEEP_MARKER!r} in p else real(p, g, l); "
    "verifier.worker_main()"
)


@pytest.fixture
def slow_workers(monkeypatch):
    """Verifier workers that hang on `SLEEP_MARKER` (a fresh pool, replaced by a normal one afterwards)."""
    worker_pool.shutdown_verifier_pool()
    monkeypatch.setattr(worker_pool, "_WORKER_BOOTSTRAP", SLOW_WORKER_BOOTSTRAP)
    yield
    monkeypatch.undo()
    worker_pool.shutdown_verifier_pool()


# ----------------------------------------------------------------------------------------------------------
# Module hygiene
# ----------------------------------------------------------------------------------------------------------


def test_import_does_not_load_heavy_modules():
    code = (
        "import sys, ampo_trl.rewards; "
        "print(sorted(m for m in ('torch', 'transformers', 'trl', 'math_verify', 'sympy') if m in sys.modules))"
    )
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert output.strip() == "[]"


def test_reward_function_names_are_stable_metric_names():
    assert accuracy_reward.__name__ == "accuracy_reward"
    assert format_reward.__name__ == "format_reward"
    assert ampo_reward.__name__ == "ampo_reward"
    assert repetition_penalty_reward.__name__ == "repetition_penalty_reward"
    assert multiple_choice_reward.__name__ == "multiple_choice_reward"
    assert make_repetition_penalty_reward(window=3, min_repeats=2).__name__ == "repetition_penalty_reward"
    for function in REWARD_FUNCS.values():
        assert function.__doc__ and len(function.__doc__) > 40


# ----------------------------------------------------------------------------------------------------------
# Answer extraction
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("<answer>42</answer>", "42"),
        ("Reasoning...\n<answer>  \\frac{1}{3}\n</answer>", "\\frac{1}{3}"),
        ("<answer>1</answer> wait, recheck <answer>2</answer>", "2"),  # the last pair wins
        ("<answer>a <answer>b</answer>", "b"),  # innermost pair before the last closing tag
        ("<answer>\\boxed{7}</answer>", "7"),
        ("<answer>The answer is $\\boxed{\\frac{1}{2}}$.</answer>", "\\frac{1}{2}"),
        ("so the set is \\boxed{\\{1,2\\}} as claimed", "\\{1,2\\}"),  # escaped braces are not grouping
        ("thus \\boxed{\\frac{\\sqrt{2}}{2}}.", "\\frac{\\sqrt{2}}{2}"),
        ("\\boxed{1} is wrong, it is \\boxed{2}", "2"),
        ("\\fbox{5}", "5"),
        ("hence $\\boxed 5$ done", "5"),
        ("<answer>5 and later \\boxed{6}", "6"),  # no closing tag: no pair, boxed fallback
        ("<answer>   </answer>", None),  # empty answer
        ("<answer></answer> and \\boxed{3}", None),  # an empty answer pair is still the answer
        ("\\boxed{\\frac{1}{2}", None),  # unbalanced braces (truncated)
        ("The answer is 5.", None),
        ("</answer> 5 <answer>", None),  # reversed tags form no pair
        ("\\boxedfoo{3}", None),
        ("", None),
    ],
)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


def test_extract_answer_rejects_non_strings():
    assert extract_answer(None) is None
    assert extract_answer(42) is None


def test_completion_text_plain_conversational_and_multipart():
    assert completion_text("plain") == "plain"
    assert completion_text(conversation("<answer>1</answer>")) == "<answer>1</answer>"
    multipart = [
        {"role": "assistant", "content": [{"type": "text", "text": "<answer>"}, {"type": "text", "text": "2"}]}
    ]
    assert completion_text(multipart) == "<answer>2"
    with_tool = [
        {"role": "assistant", "content": "calling"},
        {"role": "tool", "content": "<answer>9</answer>"},
        {"role": "assistant", "content": "<answer>3</answer>"},
    ]
    assert completion_text(with_tool) == "calling\n<answer>3</answer>"
    assert completion_text(None) == ""


# ----------------------------------------------------------------------------------------------------------
# Accuracy on real answer strings
# ----------------------------------------------------------------------------------------------------------

ACCURACY_CASES = [
    # (prediction inside <answer>, gold, expected reward)
    ("1/3", "\\frac{1}{3}", 1.0),
    ("\\frac{1}{3}", "1/3", 1.0),
    ("0.333", "\\frac{1}{3}", 0.0),  # a rounded decimal is not the fraction
    ("\\dfrac{1}{3}", "\\frac{1}{3}", 1.0),
    ("(0,1]", "(0, 1]", 1.0),
    ("[0,1]", "(0, 1]", 0.0),  # closed vs half-open
    ("(0,1)", "(0,1]", 0.0),  # open vs half-open
    ("(5,\\infty)", "(5,\\infty)", 1.0),
    ("\\sqrt{2}/2", "\\frac{\\sqrt2}{2}", 1.0),
    ("\\sqrt{3}/2", "\\frac{\\sqrt2}{2}", 0.0),
    ("5\\text{ cm}", "5", 1.0),
    ("6\\text{ cm}", "5", 0.0),
    ("1,000", "1000", 1.0),
    ("1000", "1,000", 1.0),
    ("-7", "-7", 1.0),
    ("7", "-7", 0.0),
    ("-\\frac{32}{9}", "$-\\frac{32}{9}$", 1.0),  # gold already in $...$ (MATH-style ground truth)
    ("142", "142.0", 1.0),
    ("\\{1,2,3\\}", "\\{3,2,1\\}", 1.0),
    ("(1,2)", "(1, 2)", 1.0),
    ("(2,1)", "(1,2)", 0.0),  # ordered pair
    ("(3, \\pi/2)", "\\left( 3, \\frac{\\pi}{2} \\right)", 1.0),
    ("2,1,-1,-2", "-2,-1,1,2", 1.0),
    ("2^{1009}", "$2^{1009}$", 1.0),
    ("8\\pi", "8 \\pi", 1.0),
    ("\\text{Evelyn}", "\\text{Evelyn}", 1.0),
    ("\\frac{1}{2", "\\frac{1}{2}", 0.0),  # malformed LaTeX
    ("5.", "5", 1.0),  # trailing period
]


@pytest.mark.parametrize("prediction, gold, expected", ACCURACY_CASES)
def test_accuracy_reward_real_answers(prediction, gold, expected):
    assert accuracy_reward([tagged(prediction)], answer=[gold]) == [expected]


def test_accuracy_reward_batch_plain_and_conversational_agree():
    texts = [tagged(prediction) for prediction, _, _ in ACCURACY_CASES]
    golds = [gold for _, gold, _ in ACCURACY_CASES]
    expected = [value for _, _, value in ACCURACY_CASES]
    assert accuracy_reward(texts, answer=golds) == expected
    assert accuracy_reward([conversation(text) for text in texts], answer=golds) == expected


@pytest.mark.parametrize(
    "completion, expected",
    [
        ("<answer>1</answer> no, actually <answer>2</answer>", 1.0),  # last answer (2) is used
        ("<answer>2</answer> no, actually <answer>1</answer>", 0.0),
        ("The final result is \\boxed{2}.", 1.0),  # boxed fallback without tags
        ("<answer></answer>", 0.0),
        ("The answer is 2", 0.0),  # no tags, no box
        ("<answer>\\boxed{2</answer>", 0.0),  # unbalanced braces
        ("", 0.0),
    ],
)
def test_accuracy_reward_malformed_and_fallback(completion, expected):
    assert accuracy_reward([completion], answer=["2"]) == [expected]


# ----------------------------------------------------------------------------------------------------------
# Gold answer columns
# ----------------------------------------------------------------------------------------------------------


def test_gold_from_each_column_convention():
    completions = [tagged("\\frac{1}{2}"), tagged("3")]
    assert accuracy_reward(completions, answer=["0.5", "3"]) == [1.0, 1.0]
    assert accuracy_reward(completions, solution=["$\\frac12$", "4"]) == [1.0, 0.0]
    reward_model = [{"ground_truth": "1/2", "style": "rule"}, {"ground_truth": "3", "style": "rule"}]
    assert accuracy_reward(completions, reward_model=reward_model) == [1.0, 1.0]


def test_answer_column_takes_precedence():
    completions = [tagged("3")]
    assert accuracy_reward(completions, answer=["3"], solution=["4"], reward_model=[{"ground_truth": "4"}]) == [1.0]
    assert accuracy_reward(completions, solution=["3"], reward_model=[{"ground_truth": "4"}]) == [1.0]
    # A column present but None (TRL passes every column) is skipped.
    assert accuracy_reward(completions, answer=None, reward_model=[{"ground_truth": "3"}]) == [1.0]


def test_non_string_and_worked_solution_golds():
    golds = gold_answers_from_kwargs(
        {"answer": [1000, 142.0, 0.5, ["3"], [1, 2], "Work... so the answer is \\boxed{12}.", "Steps\n#### 72"]}
    )
    assert golds == ["1000", "142", "0.5", "3", "1, 2", "12", "72"]
    completions = [tagged(p) for p in ["1,000", "142", "\\frac{1}{2}", "3", "\\{1, 2\\}", "12", "72"]]
    assert (
        accuracy_reward(completions, answer=[1000, 142.0, 0.5, ["3"], [1, 2], "\\boxed{12}", "#### 72"]) == [1.0] * 7
    )


def test_missing_gold_column_error_names_all_conventions():
    with pytest.raises(ValueError) as error:
        accuracy_reward([tagged("1")], prompts=["q"], completion_ids=[[1, 2]])
    message = str(error.value)
    for column in ("'answer'", "'solution'", "'reward_model'", "ground_truth"):
        assert column in message


def test_bad_gold_columns_raise():
    with pytest.raises(ValueError, match="ground_truth"):
        accuracy_reward([tagged("1")], reward_model=[{"answer": "1"}])
    with pytest.raises(ValueError, match="2 rows but there are 1 completions"):
        accuracy_reward([tagged("1")], answer=["1", "2"])


# ----------------------------------------------------------------------------------------------------------
# Format and composite reward
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "completion, expected",
    [
        ("thinking <answer>5</answer>", 1.0),
        ("<answer>5</answer> trailing words", 1.0),
        ("<answer></answer>", 1.0),  # the format is right even if the answer is empty
        ("<answer>5</answer><answer>6</answer>", 0.0),  # two pairs
        ("<answer>5<answer>6</answer>", 0.0),  # two opening tags
        ("<answer>5</answer></answer>", 0.0),  # two closing tags
        ("</answer>5<answer>", 0.0),  # reversed order
        ("<answer>5", 0.0),  # missing close
        ("5</answer>", 0.0),  # missing open
        ("\\boxed{5}", 0.0),
        ("<Answer>5</Answer>", 0.0),  # tags are case-sensitive
    ],
)
def test_format_reward(completion, expected):
    assert format_reward([completion]) == [expected]
    assert format_reward([conversation(completion)]) == [expected]


def test_ampo_reward_is_point9_accuracy_plus_point1_format():
    completions = [
        tagged("\\frac{1}{2}"),  # correct, formatted -> 1.0
        "so \\boxed{0.5}",  # correct via boxed fallback, no tags -> 0.9
        tagged("0.25"),  # wrong, formatted -> 0.1
        "no idea",  # -> 0.0
        "<answer>1/2</answer><answer>0.5</answer>",  # correct (last) but two pairs -> 0.9
    ]
    golds = ["1/2"] * len(completions)
    values = ampo_reward(completions, answer=golds)
    assert values == pytest.approx([1.0, 0.9, 0.1, 0.0, 0.9])
    # Same as TRL's weighted sum of the two separate functions with reward_weights=[0.9, 0.1].
    accuracy, fmt = accuracy_reward(completions, answer=golds), format_reward(completions, answer=golds)
    assert values == pytest.approx([0.9 * a + 0.1 * f for a, f in zip(accuracy, fmt)])


# ----------------------------------------------------------------------------------------------------------
# Repetition penalty
# ----------------------------------------------------------------------------------------------------------

TEN_WORDS = "we compute the sum of the first n odd numbers"


def test_repetition_penalty_threshold():
    assert len(TEN_WORDS.split()) == 10
    repeated_10 = "Start. " + " ".join([TEN_WORDS] * 10) + " <answer>4</answer>"
    repeated_9 = "Start. " + " ".join([TEN_WORDS] * 9) + " <answer>4</answer>"
    natural = "The sum of the first n odd numbers is n^2, so for n = 2 it is 4. <answer>4</answer>"
    assert repetition_penalty_reward([repeated_10, repeated_9, natural]) == [-1.0, 0.0, 0.0]
    assert repetition_penalty_reward([conversation(repeated_10)]) == [-1.0]


def test_repetition_penalty_exempts_teacher_rows():
    looping = " ".join([TEN_WORDS] * 12)
    sources = ["policy", "Qwen3-8B", "policy", None]
    completions = [looping, looping, "fine", looping]
    assert repetition_penalty_reward(completions, completion_source=sources) == [-1.0, 0.0, 0.0, -1.0]


def test_repetition_penalty_factory_parameters():
    reward = make_repetition_penalty_reward(window=3, min_repeats=2, penalty=-0.5)
    assert reward(["a b c a b c", "a b c d a b"]) == [-0.5, 0.0]
    assert rewards.REPETITION_WINDOW_WORDS == 10 and rewards.REPETITION_MIN_REPEATS == 10
    with pytest.raises(ValueError):
        make_repetition_penalty_reward(window=0)


# ----------------------------------------------------------------------------------------------------------
# Multiple choice
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "answer",
    [
        "B",
        "b",
        "(B)",
        "[B]",
        "B.",
        "B)",
        "B:",
        "\\boxed{B}",
        "\\text{(B)}",
        "$\\mathrm{B}$",
        "**B**",
        "The answer is B",
        "The answer is $\\boxed{B}$",
        "answer: (B)",
        "The correct option is B.",
        "The answer is option B",
        "Option B: 12 electrons",
        "B. A triangle has three sides",  # "A" here is an article
        "B is correct",
    ],
)
def test_choice_letter_forms(answer):
    assert extract_choice_letter(answer) == "B"


@pytest.mark.parametrize(
    "answer",
    [
        "Because",  # capital letter inside a word
        "ABC",
        "Bob",
        "The answer is Bob",
        "I think so",
        "A and B",
        "B, C",  # several options named
        "(A) or (B)",
        "A, B, C, D",
        "42",
        "K",  # outside A-J
        "",
    ],
)
def test_choice_letter_rejects_non_answers(answer):
    assert extract_choice_letter(answer) is None


def test_multiple_choice_reward():
    completions = [
        tagged("(B)"),
        tagged("The answer is b"),  # lower case only counts as a whole answer: not here
        tagged("b"),
        "reasoning ... \\boxed{C}",
        tagged("Because of symmetry"),
        tagged("A, B, C, D"),
        conversation(tagged("Option B: 12")),
        "The answer is B",  # no tags and no box: no extracted answer
    ]
    assert multiple_choice_reward(completions, answer=["B"] * len(completions)) == [
        1.0,
        0.0,
        1.0,
        0.0,
        0.0,
        0.0,
        1.0,
        0.0,
    ]
    reward_model = [{"ground_truth": "(c)"}, {"ground_truth": "C"}]
    assert multiple_choice_reward(["\\boxed{C}", "<answer>D</answer>"], reward_model=reward_model) == [1.0, 0.0]


@pytest.mark.parametrize(
    "completion, expected",
    [
        ("The charge moves... so it is C.\nANSWER: C", 1.0),  # GPQA / simple-evals prompt format, no tag
        ("Answer: (C)", 1.0),
        ("**Answer:** $C$", 1.0),
        ("answer: c", 1.0),  # a lone lower-case letter is a whole answer
        ("First guess ANSWER: B\nOn reflection,\nANSWER: C", 1.0),  # the last one
        ("ANSWER: C\nhmm, ANSWER: B", 0.0),
        ("ANSWER: C or D", 0.0),  # several options: no letter
        ("ANSWER: Because of symmetry", 0.0),
        ("<answer>B</answer>\nANSWER: C", 0.0),  # a tag pair wins over an ANSWER line
        ("ANSWER: C\n\\boxed{B}", 1.0),  # ... and an ANSWER line over a box
        ("ANSWER: C \\boxed{B}", 0.0),  # two letters on the line
        ("no answer line, but \\boxed{C}", 1.0),
        ("The right answer is clearly C", 0.0),  # no colon: not an ANSWER line
    ],
)
def test_multiple_choice_accepts_answer_lines_without_tags(completion, expected):
    assert multiple_choice_reward([completion], answer=["C"]) == [expected]
    assert multiple_choice_reward([conversation(completion)], answer=["C"]) == [expected]


def test_multiple_choice_non_letter_gold_scores_zero_with_warning():
    with pytest.warns(UserWarning, match="not an option letter"):
        assert multiple_choice_reward([tagged("B")], answer=["unusual gold 17"]) == [0.0]


# ----------------------------------------------------------------------------------------------------------
# Registry
# ----------------------------------------------------------------------------------------------------------


def test_resolve_short_names_function_names_and_strings():
    assert resolve_reward_funcs(["accuracy", "format"]) == [accuracy_reward, format_reward]
    assert resolve_reward_funcs("ampo, repetition_penalty multiple_choice") == [
        ampo_reward,
        repetition_penalty_reward,
        multiple_choice_reward,
    ]
    assert resolve_reward_funcs(["accuracy_reward"]) == [accuracy_reward]
    assert set(REWARD_FUNCS) == {
        "accuracy",
        "format",
        "ampo",
        "ampo_released",
        "repetition_penalty",
        "multiple_choice",
    }


def test_resolve_dotted_paths_and_callables():
    assert resolve_reward_funcs(["ampo_trl.rewards.format_reward"]) == [format_reward]
    assert resolve_reward_funcs(["ampo_trl.rewards:format_reward"]) == [format_reward]
    assert resolve_reward_funcs("os.path.join") == [__import__("os").path.join]

    def custom(completions, **kwargs):
        return [0.0] * len(completions)

    assert resolve_reward_funcs([custom, "format"]) == [custom, format_reward]


def test_resolve_errors():
    with pytest.raises(ValueError) as error:
        resolve_reward_funcs(["acuracy"])
    message = str(error.value)
    assert "'acuracy'" in message
    for name in REWARD_FUNCS:
        assert name in message
    assert "my_package.my_module:my_reward" in message
    with pytest.raises(ValueError, match="Cannot import"):
        resolve_reward_funcs(["no_such_package_xyz.reward"])
    with pytest.raises(ValueError, match="Cannot import"):
        resolve_reward_funcs(["ampo_trl.rewards:no_such_function"])
    with pytest.raises(ValueError, match="non-callable"):
        resolve_reward_funcs(["ampo_trl.rewards.ACCURACY_WEIGHT"])


# ----------------------------------------------------------------------------------------------------------
# Verifier: fast path, batching, time limit, fallback
# ----------------------------------------------------------------------------------------------------------


def test_verify_answers_basics():
    assert verify_answers([None, "", "3", "3"], ["3", "3", "", "3"]) == [False, False, False, True]
    with pytest.raises(ValueError):
        verify_answers(["1"], ["1", "2"])
    with pytest.raises(ValueError):
        verify_answers(["1"], ["1"], timeout=0)


def test_fast_path_skips_math_verify():
    before = verifier_stats()
    assert verify_answers(["\\left( 3, \\dfrac{\\pi}{2} \\right)."], ["(3,\\frac{\\pi}{2})"]) == [True]
    assert stat_delta(before, "fast_path_matches") == 1
    assert stat_delta(before, "verified_in_pool") + stat_delta(before, "verified_in_process") == 0
    # Digits separated by a space are not merged ("1 2" is not "12"); Math-Verify decides instead.
    assert not normalize.is_exact_match("1 2", "12")


def test_identical_pairs_are_verified_once():
    before = verifier_stats()
    assert verify_answers(["1/4"] * 8 + ["0.3"], ["\\frac{1}{4}"] * 8 + ["\\frac14"]) == [True] * 8 + [False]
    assert stat_delta(before, "verified_in_pool") == 2


def test_batch_of_64_easy_answers_reuses_the_warm_pool():
    """What keeps a batch fast after warm-up, checked by counters rather than a clock: the running workers are reused
    (no new start), every answer is decided in the pool (no timeout, no crash, no in-process fallback)."""
    verify_answers(["2/3"], ["\\frac{2}{3}"])  # warm-up: starts the pool
    predictions = [f"{k}/11" for k in range(1, 33)] + [f"{k * 1000:,}" for k in range(1, 33)]
    golds = [f"\\frac{{{k}}}{{11}}" for k in range(1, 33)] + [str(k * 1000) for k in range(1, 33)]
    before = verifier_stats()
    verdicts = verify_answers(predictions, golds)
    assert verdicts == [True] * 64
    assert stat_delta(before, "worker_starts") == 0
    assert stat_delta(before, "timeouts") == 0 and stat_delta(before, "worker_crashes") == 0
    # "k,000" vs "k000" are equal after normalisation (the fast path); the fractions need Math-Verify, in the pool.
    assert stat_delta(before, "fast_path_matches") == 32
    assert stat_delta(before, "verified_in_pool") == 32 and stat_delta(before, "verified_in_process") == 0


def test_timeout_from_non_main_thread_scores_zero_and_pool_recovers(monkeypatch, slow_workers):
    monkeypatch.setenv(verifier.TIMEOUT_ENV_VAR, "1")
    verify_answers(["2/3"], ["\\frac{2}{3}"])  # make sure the pool is up before timing
    before = verifier_stats()
    outcome = {}

    def score():
        start = time.monotonic()
        outcome["rewards"] = accuracy_reward([tagged(SLEEP_MARKER), tagged("1/3")], answer=["1", "\\frac{1}{3}"])
        outcome["elapsed"] = time.monotonic() - start

    thread = threading.Thread(target=score)
    thread.start()
    thread.join(timeout=30)
    assert not thread.is_alive(), "accuracy_reward hung in a non-main thread"
    assert outcome["rewards"] == [0.0, 1.0]
    # The timing is the behaviour here: it waited for the 1 s limit, and returned long before the 60 s sleep ended.
    assert 0.9 <= outcome["elapsed"] < 30
    assert stat_delta(before, "timeouts") == 1
    assert stat_delta(before, "worker_starts") == 1  # the stuck worker was replaced
    # The pool keeps working afterwards.
    assert verify_answers(["\\sqrt{2}/2", "0.7"], ["\\frac{\\sqrt2}{2}", "\\frac{\\sqrt2}{2}"]) == [True, False]
    assert verifier_stats()["pool_workers"] >= 1


def test_pathological_expression_is_cut_off():
    # sympy evaluates 9^(9^(9^9)) for minutes: the worker is abandoned at the limit (a timeout, then a fresh worker)
    # and the item is False; without the limit this test would hit pytest-timeout instead.
    verify_answers(["2/3"], ["\\frac{2}{3}"])  # the pool is up
    before = verifier_stats()
    assert verify_answers(["9^{9^{9^{9}}}", "3"], ["1", "3.0"], timeout=1.0) == [False, True]
    assert stat_delta(before, "timeouts") == 1
    assert stat_delta(before, "worker_starts") == 1  # the stuck worker was replaced
    assert verify_answers(["1,000"], ["1000"]) == [True]


def test_in_process_switch_from_non_main_thread(monkeypatch):
    real = verifier._math_verify_match
    monkeypatch.setattr(
        verifier, "_math_verify_match", lambda p, g, limit: time.sleep(60) if SLEEP_MARKER in p else real(p, g, limit)
    )
    monkeypatch.setenv(verifier.IN_PROCESS_ENV_VAR, "1")
    before = verifier_stats()
    outcome = {}

    def score():
        start = time.monotonic()
        outcome["verdicts"] = verify_answers([SLEEP_MARKER, "1/3"], ["1", "\\frac{1}{3}"], timeout=1.0)
        outcome["elapsed"] = time.monotonic() - start

    thread = threading.Thread(target=score)
    thread.start()
    thread.join(timeout=30)
    assert outcome["verdicts"] == [False, True]
    # The timing is the behaviour here: the caller got its answer long before the 60 s sleep ended.
    assert outcome["elapsed"] < 30
    assert stat_delta(before, "verified_in_process") == 2
    assert stat_delta(before, "verified_in_pool") == 0
    assert stat_delta(before, "timeouts") == 1


def test_in_process_main_thread_uses_math_verify_limit(monkeypatch):
    # In the main thread the limit is Math-Verify's own (signal.alarm): it gets the time limit, in whole seconds,
    # and cuts the pathological expression off (without it this test would hit pytest-timeout instead).
    real = verifier._math_verify_match
    limits = []
    monkeypatch.setattr(verifier, "_math_verify_match", lambda p, g, limit: limits.append(limit) or real(p, g, limit))
    before = verifier_stats()
    assert verify_answers(["9^{9^{9^{9}}}", "(0,1]"], ["1", "(0, 1]"], timeout=1.0, in_process=True) == [False, True]
    assert limits == [1]  # "(0,1]" == "(0, 1]" is decided by the fast path
    assert stat_delta(before, "verified_in_process") == 1 and stat_delta(before, "verified_in_pool") == 0


def test_pool_start_failure_falls_back_to_in_process_and_warns_once(monkeypatch):
    rewards.shutdown_verifier_pool()
    monkeypatch.setattr(worker_pool, "_WORKER_BOOTSTRAP", "import sys; sys.exit(3)")
    monkeypatch.setattr(verifier, "_FALLBACK_WARNED", False)
    before = verifier_stats()
    try:
        with pytest.warns(RuntimeWarning, match="worker pool unavailable"):
            assert verify_answers(["1/3", "0.3"], ["\\frac{1}{3}", "\\frac{1}{3}"]) == [True, False]
        assert verifier_stats()["pool_disabled"] is True
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # warned once only
            assert verify_answers(["0.5"], ["\\frac12"]) == [True]
        assert stat_delta(before, "pool_fallbacks") == 1
        assert stat_delta(before, "verified_in_process") == 3
    finally:
        monkeypatch.undo()
        rewards.shutdown_verifier_pool()
    assert verifier_stats()["pool_disabled"] is False
    before = verifier_stats()
    assert verify_answers(["1/3"], ["\\frac{1}{3}"]) == [True]  # the real pool works again
    assert stat_delta(before, "verified_in_pool") == 1


def test_verifier_stats_shape():
    stats = verifier_stats()
    for key in ("fast_path_matches", "verified_in_pool", "verified_in_process", "timeouts", "worker_crashes"):
        assert isinstance(stats[key], int) and stats[key] >= 0
    assert not math.isnan(float(stats["pool_workers"]))
