"""Tests for ampo_trl.evaluation and scripts/evaluate.py (CPU, tiny model, real shared benchmark rows).

The shared benchmark files are part of the CI environment: `$AMPO_BENCHMARK_DIR`, else `../shared/data/benchmarks`
next to the repository. When they are missing the tests FAIL (they are not skipped).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from fractions import Fraction
from pathlib import Path

import pytest
from helpers import shared_benchmark_dir
from launcher import launch_workers

from ampo_trl import evaluation as ev
from ampo_trl.answers import SYSTEM_PROMPT
from ampo_trl.evaluation import (
    AMPOEvalCallback,
    EvalSettings,
    benchmark_metrics,
    canonical_benchmark,
    load_benchmark,
    load_benchmarks,
    pass_at_k,
    score_responses,
)
from ampo_trl.generation import Generation

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "evaluate.py"


@pytest.fixture(scope="session")
def benchmark_dir() -> Path:
    directory = shared_benchmark_dir()
    expected = [
        "math6_eval.parquet",
        "passk256_aime_amc.parquet",
        "passk32_math500.parquet",
        "train_validation.parquet",
    ]
    missing = [name for name in expected if not (directory / name).is_file()]
    if missing:
        pytest.fail(
            f"Shared benchmark files {missing} not found in {directory}. They are part of the test environment: "
            "set AMPO_BENCHMARK_DIR to the folder holding them (normally ../shared/data/benchmarks)."
        )
    return directory


@pytest.fixture(scope="session")
def tokenizer():
    from ampo_trl.demo.tiny import build_tiny_tokenizer

    return build_tiny_tokenizer()


def tagged(answer: str) -> str:
    return f"Let me think step by step. So the result follows.\n<answer>{answer}</answer>"


# ----------------------------------------------------------------------------------------------------------
# pass@k estimator
# ----------------------------------------------------------------------------------------------------------


def exact_pass_at_k(n: int, c: int, k: int) -> Fraction:
    return 1 - Fraction(math.comb(n - c, k), math.comb(n, k))


@pytest.mark.parametrize(
    "n, c, k, expected",
    [
        (5, 2, 1, 0.4),
        (5, 2, 2, 0.7),
        (5, 2, 3, 0.9),  # 1 - C(3,3)/C(5,3) = 1 - 1/10
        (5, 2, 4, 1.0),  # n - c < k: every 4-subset holds a correct sample
        (5, 0, 3, 0.0),
        (5, 5, 1, 1.0),
        (4, 1, 2, 0.5),  # 1 - C(3,2)/C(4,2) = 1 - 3/6
        (1, 1, 1, 1.0),
        (1, 0, 1, 0.0),
    ],
)
def test_pass_at_k_exact_small_cases(n, c, k, expected):
    assert pass_at_k(n, c, k) == expected  # exact: integer arithmetic, one rounding


def test_pass_at_k_matches_exact_binomials_and_is_stable_for_large_n():
    for n in (1, 2, 7, 32):
        for c in range(n + 1):
            for k in range(1, n + 1):
                assert pass_at_k(n, c, k) == pytest.approx(float(exact_pass_at_k(n, c, k)), abs=1e-12)
    # n = 256 (the paper's AIME/AMC setting): C(256, 128) ~ 1e75 would overflow a naive float ratio path.
    for c, k in [(1, 1), (3, 128), (10, 200), (250, 2)]:
        assert pass_at_k(256, c, k) == pytest.approx(float(exact_pass_at_k(256, c, k)), abs=1e-12)
    assert pass_at_k(256, 1, 1) == pytest.approx(1 / 256)
    # pass@1 is the fraction correct; pass@k grows with k.
    assert pass_at_k(32, 5, 1) == pytest.approx(5 / 32)
    values = [pass_at_k(32, 5, k) for k in ev.default_k_values(32)]
    assert values == sorted(values)


def test_pass_at_k_rejects_impossible_inputs():
    with pytest.raises(ValueError, match="k <= n"):
        pass_at_k(4, 1, 5)
    with pytest.raises(ValueError, match="0 <= c <= n"):
        pass_at_k(4, 5, 1)
    assert ev.mean_pass_at_k([(4, 1), (2, 2)], 4) is None  # undefined: a problem has only 2 samples
    assert ev.default_k_values(1) == [1]
    assert ev.default_k_values(32) == [1, 2, 4, 8, 16, 32]
    assert ev.default_k_values(12) == [1, 2, 4, 8, 12]


def test_benchmark_metrics_avg_at_n_and_pass_at_k():
    problems = [
        ev.Problem("aime24", "aime", f"aime24-{i}", [{"role": "user", "content": "q"}], "1", "math") for i in range(2)
    ]
    samples = []
    for problem, correct in zip(problems, ([True, True, False, False, False], [False] * 5)):
        for s, ok in enumerate(correct):
            samples.append(
                {
                    "problem_id": problem.problem_id,
                    "correct": ok,
                    "format_ok": s < 4,
                    "extracted_answer": "1" if s < 3 else None,
                    "num_tokens": 10 * (s + 1),
                    "finish_reason": "length" if s == 4 else "stop",
                }
            )
    metrics = benchmark_metrics(problems, samples)
    assert metrics["accuracy"] == pytest.approx((2 / 5 + 0) / 2)
    assert metrics["pass_at_k"]["1"] == pytest.approx(0.2)
    assert metrics["pass_at_k"]["2"] == pytest.approx(0.35)  # (0.7 + 0) / 2
    assert list(metrics["pass_at_k"]) == ["1", "2", "4", "5"]
    assert metrics["metric"] == "avg@5" and metrics["samples_per_problem"] == 5
    assert metrics["mean_length"] == pytest.approx(30.0)
    assert metrics["format_rate"] == pytest.approx(0.8)
    assert metrics["answer_rate"] == pytest.approx(0.6)
    assert metrics["truncation_rate"] == pytest.approx(0.2)
    assert metrics["problems_none_correct"] == 1 and metrics["problems_all_correct"] == 0


# ----------------------------------------------------------------------------------------------------------
# Benchmark files
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data_source, key",
    [
        ("aime", "aime24"),
        ("AIME24", "aime24"),
        ("aime_2024", "aime24"),
        ("aime25", "aime25"),
        ("AIME-2025", "aime25"),
        ("aime2023", None),
        ("amc", "amc"),
        ("amc23", "amc"),
        ("math", "math500"),
        ("MATH-500", "math500"),
        ("HuggingFaceH4/MATH-500", "math500"),
        ("lighteval/MATH", "math500"),
        ("minerva", "minerva"),
        ("minerva_math", "minerva"),
        ("olympiad_bench", "olympiad"),
        ("OlympiadBench", "olympiad"),
        ("arc_c", "arc_c"),
        ("ARC-Challenge", "arc_c"),
        ("ai2_arc_challenge", "arc_c"),
        ("arc_e", None),
        ("gpqa", "gpqa_diamond"),
        ("gpqa_diamond", "gpqa_diamond"),
        ("gpqa_main", None),
        ("mmlu_pro", "mmlu_pro"),
        ("MMLU-Pro", "mmlu_pro"),
        ("mmlu", None),
        ("gsm8k", None),
    ],
)
def test_canonical_benchmark_names(data_source, key):
    assert canonical_benchmark(data_source) == key


def test_shared_files_group_repeated_rows_by_problem(benchmark_dir):
    math6 = load_benchmark("math6", benchmark_dir=benchmark_dir)
    assert math6.num_rows == 6023 and not math6.skipped
    counts = {key: sum(p.benchmark == key for p in math6.problems) for key in math6.benchmarks()}
    assert counts == {"math500": 500, "olympiad": 675, "minerva": 272, "aime24": 30, "amc": 83, "aime25": 30}
    repeats = {key: {p.repeats for p in math6.problems if p.benchmark == key} for key in counts}
    assert repeats["aime24"] == {32} and repeats["amc"] == {32} and repeats["aime25"] == {32}  # avg@32 rows
    assert repeats["math500"] == {1}
    assert sum(p.repeats for p in math6.problems) == 6023
    first = next(p for p in math6.problems if p.benchmark == "aime24")
    assert first.gold == "204" and first.problem_id == "aime24-00000" and first.messages[0]["role"] == "system"

    validation = load_benchmark("validation", benchmark_dir=benchmark_dir)  # aime 8x, amc 4x in that file
    assert {p.repeats for p in validation.problems if p.benchmark == "aime24"} == {8}
    assert {p.repeats for p in validation.problems if p.benchmark == "amc"} == {4}
    passk = load_benchmark("passk_aime_amc", benchmark_dir=benchmark_dir)
    assert {p.repeats for p in passk.problems} == {1} and len(passk.problems) == 143
    assert load_benchmark("passk_math500", benchmark_dir=benchmark_dir).benchmarks() == ["math500"]


def test_select_max_problems_and_accounting(benchmark_dir):
    (subset,) = load_benchmarks(["math6"], benchmark_dir=benchmark_dir, select=["aime", "MATH500"], max_problems=3)
    assert [p.problem_id for p in subset.problems] == [
        "math500-00000",
        "math500-00001",
        "math500-00002",
        "aime24-00000",
        "aime24-00001",
        "aime24-00002",
    ]
    summary = subset.summary()
    assert summary["problems_not_selected"] == {
        "olympiad": 675,
        "minerva": 272,
        "amc": 83,
        "aime25": 30,
        "math500": 497,
        "aime24": 27,
    }
    with pytest.raises(ValueError, match="gpqa.*none of the sources"):
        load_benchmarks(["math6"], benchmark_dir=benchmark_dir, select=["aime24", "gpqa"])
    with pytest.raises(ValueError, match="in both"):
        load_benchmarks(["math6", "passk_math500"], benchmark_dir=benchmark_dir)
    sets = load_benchmarks(["passk_math500", "passk_aime_amc"], benchmark_dir=benchmark_dir, select=["math", "aime25"])
    assert [s.benchmarks() for s in sets] == [["math500"], ["aime25"]]


def test_resolution_errors_name_the_directory_and_fix(benchmark_dir, tmp_path):
    assert ev.resolve_benchmark_path("passk_math500", benchmark_dir).name == "passk32_math500.parquet"
    assert ev.resolve_benchmark_path("train_validation", benchmark_dir).name == "train_validation.parquet"
    with pytest.raises(FileNotFoundError, match="matches no file.*math6_eval"):
        ev.resolve_benchmark_path("nonexistent", benchmark_dir)
    with pytest.raises(FileNotFoundError, match="passk.*matches several files"):
        ev.resolve_benchmark_path("passk", benchmark_dir)
    with pytest.raises(FileNotFoundError, match="AMPO_BENCHMARK_DIR"):
        ev.resolve_benchmark_path("math6", tmp_path / "missing")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"text": "hello", "label": 1}) + "\n")
    with pytest.raises(ValueError, match=r"bad.jsonl: no prompt column.*'label', 'text'"):
        load_benchmark(bad)
    bad.write_text(json.dumps({"question": "1+1?", "label": 1}) + "\n")
    with pytest.raises(ValueError, match="no gold-answer column.*reward_model"):
        load_benchmark(bad)
    bad.write_text('{"question": "1+1?", "answer": "2"}\n{oops\n')
    with pytest.raises(ValueError, match="line 2: not valid JSON"):
        load_benchmark(bad)


def test_plain_format_skipped_rows_are_counted_and_reported(tmp_path):
    rows = [
        {"question": "What is 1+1?", "answer": "2"},
        {"question": "What is 1+1?", "answer": "2"},  # a repeat: same problem
        {"problem": "Half of 3?", "solution": "Half of 3 is \\boxed{\\frac{3}{2}}."},  # gold from the box
        {"question": "", "answer": "1"},  # empty question
        {"question": "No gold here"},
        {"question": "Empty gold", "answer": "  "},
        {"question": "Which is a prime?", "options": ["4", "6", "7", "9"], "answer": "C", "data_source": "quiz"},
    ]
    path = tmp_path / "mine.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    loaded = load_benchmark(path)
    assert loaded.skipped == {"empty prompt/question": 1, "no gold answer": 1, "empty gold answer": 1}
    assert [(p.benchmark, p.gold, p.repeats, p.scoring) for p in loaded.problems] == [
        ("mine", "2", 2, "math"),
        ("mine", "\\frac{3}{2}", 1, "math"),
        ("quiz", "C", 1, "multiple_choice"),  # an unknown set whose golds are all letters
    ]
    assert loaded.problems[2].question.endswith("A. 4\nB. 6\nC. 7\nD. 9")
    assert any("scoring inferred" in note for note in loaded.notes)
    forced = load_benchmark(path, scoring={"quiz": "math"})
    assert forced.problems[2].scoring == "math"


# ----------------------------------------------------------------------------------------------------------
# Scoring on real benchmark rows
# ----------------------------------------------------------------------------------------------------------


def test_scoring_real_math_rows_with_hand_written_answers(benchmark_dir):
    problems = {(p.benchmark, p.index): p for p in load_benchmark("math6", benchmark_dir=benchmark_dir).problems}
    cases = [  # (benchmark, extra_info.index, response, correct?)
        ("math500", 0, tagged("(3, \\frac{\\pi}{2})"), True),  # gold \left( 3, \frac{\pi}{2} \right)
        ("math500", 0, tagged("(3, \\pi)"), False),
        ("math500", 2, tagged("14/3"), True),  # gold \frac{14}{3}
        ("math500", 2, "So the answer is \\boxed{\\dfrac{14}{3}}.", True),  # boxed fallback
        ("math500", 2, tagged("\\frac{3}{14}"), False),
        ("math500", 54, tagged("\\frac{3}{20}"), True),  # gold 0.15
        ("math500", 54, tagged("0.16"), False),
        ("math500", 103, tagged("(3, 4]"), True),  # interval
        ("math500", 103, tagged("[3,4]"), False),  # closedness matters
        ("math500", 184, tagged("(2, \\infty)"), True),
        ("math500", 184, tagged("[2,\\infty)"), False),
        ("math500", 227, tagged("(C)"), True),  # gold \text{(C)}
        ("math500", 227, tagged("(D)"), False),
        ("olympiad", 270, tagged("[-1, -1/2]"), True),  # gold $[-1,-\frac{1}{2}]$
        ("olympiad", 270, tagged("[-1,\\frac{1}{2}]"), False),
        ("aime24", 1, tagged("25"), True),  # gold 025
        ("aime24", 1, tagged("24"), False),
        ("amc", 0, tagged("142"), True),  # gold 142.0
        ("amc", 0, "The answer is 142 but I give no tags", False),  # no extractable answer
        ("amc", 0, "<answer>143</answer> wait, <answer>142</answer>", True),  # the LAST answer counts
    ]
    chosen = [problems[(benchmark, index)] for benchmark, index, _, _ in cases]
    scores = score_responses([c[2] for c in cases], [p.gold for p in chosen], [p.scoring for p in chosen])
    assert [s["correct"] for s in scores] == [c[3] for c in cases], [
        (c[0], c[1], c[2][-40:], s["extracted"]) for c, s in zip(cases, scores) if s["correct"] != c[3]
    ]
    assert scores[0]["format_ok"] and not scores[3]["format_ok"] and not scores[-1]["format_ok"]
    assert scores[18]["extracted"] is None and scores[-1]["extracted"] == "142"


def test_scoring_multiple_choice_rows():
    rows = [  # hand-written rows in the authors' schema for the OOD sets
        {"data_source": "arc_c", "prompt": [{"role": "user", "content": "Which is a mammal? A. shark B. whale"}],
         "reward_model": {"ground_truth": "B"}},
        {"data_source": "gpqa_diamond", "prompt": [{"role": "user", "content": "Pick. (A) .. (B) .. (C) .. (D) .."}],
         "reward_model": {"ground_truth": "(C)"}},
        {"data_source": "mmlu_pro", "prompt": [{"role": "user", "content": "Ten options A-J ..."}],
         "reward_model": {"ground_truth": "J"}},
    ]  # fmt: skip
    rows.append({"data_source": "ai2_arc", "question": "Which is a gas? A. ice B. steam", "answer": "B"})
    loaded = load_benchmark(rows, rename={"ai2_arc": "arc_c"}, select=["arc_c", "gpqa", "mmlu_pro"])
    assert loaded.problems[-1].benchmark == "arc_c" and loaded.problems[-1].problem_id == "arc_c-00001"
    loaded.problems.pop()
    assert [(p.benchmark, p.scoring) for p in loaded.problems] == [
        ("arc_c", "multiple_choice"),
        ("gpqa_diamond", "multiple_choice"),
        ("mmlu_pro", "multiple_choice"),
    ]
    arc, gpqa, mmlu = loaded.problems
    cases = [
        (arc, tagged("B"), True),
        (arc, tagged("(B) whale"), True),
        (arc, "Final: \\boxed{B}", True),
        (arc, tagged("A"), False),
        (arc, tagged("B, C"), False),  # several options: no letter
        (arc, tagged("whale"), False),  # option text, not its letter
        (gpqa, tagged("C"), True),
        (gpqa, tagged("The answer is (C)"), True),
        (gpqa, tagged("D"), False),
        (mmlu, tagged("J"), True),
        (mmlu, tagged("I"), False),
    ]
    scores = score_responses([c[1] for c in cases], [c[0].gold for c in cases], [c[0].scoring for c in cases])
    assert [s["correct"] for s in scores] == [c[2] for c in cases]


# ----------------------------------------------------------------------------------------------------------
# Prompts and the whole pipeline with a scripted backend
# ----------------------------------------------------------------------------------------------------------


def test_system_prompt_replaces_stored_one(benchmark_dir):
    problem = load_benchmark("passk_math500", benchmark_dir=benchmark_dir, max_problems=1).problems[0]
    assert problem.messages[0]["role"] == "system" and "<answer>" not in problem.messages[0]["content"]
    messages = ev.build_messages(problem.messages)
    assert [m["role"] for m in messages] == ["system", "user"]
    assert (
        messages[0]["content"]
        == SYSTEM_PROMPT
        == (
            "You are a helpful assistant. Please reason step by step to solve the problem and put the final answer "
            "within the <answer> </answer> tags."
        )
    )  # the paper's system prompt, verbatim
    assert messages[1] == problem.messages[1]
    assert ev.build_messages(problem.messages, None) == problem.messages
    assert [m["role"] for m in ev.build_messages(problem.messages, "")] == ["user"]


class ScriptedBackend:
    """A backend that answers each problem from a script: {question substring: [responses]} (cycled)."""

    name = "scripted"
    model_name = "scripted-model"

    def __init__(self, tokenizer, script):
        self.tokenizer = tokenizer
        self.script = script
        self.requests = []

    def describe(self):
        return {"backend": self.name}

    def generate(self, requests, settings):
        self.requests.extend(requests)
        results = []
        for request in requests:
            prompt = self.tokenizer.decode(request.prompt_ids)
            responses = next(v for k, v in self.script.items() if k in prompt)
            results.append(
                [Generation(responses[i % len(responses)], 5 + i, "stop") for i in range(request.num_samples)]
            )
        return results


def test_evaluate_pipeline_expands_repeats_and_computes_exact_metrics(benchmark_dir, tokenizer, tmp_path):
    sets = load_benchmarks(["math6"], benchmark_dir=benchmark_dir, select=["aime24", "math500"], max_problems=1)
    script = {
        "Every morning Aya": [tagged("204"), tagged("200"), tagged("204"), tagged("1")],  # AIME24 #0: 1/2 correct
        "Convert the point $(0,3)$": ["no answer at all"],  # MATH-500 #0: never correct
    }
    backend = ScriptedBackend(tokenizer, script)
    output = ev.evaluate(backend, sets, EvalSettings(num_samples=2), label="scripted")
    # 32 repeated rows x 2 samples for the AIME problem, 2 for the MATH-500 one.
    assert sorted(r.num_samples for r in backend.requests) == [2, 64]
    assert SYSTEM_PROMPT in tokenizer.decode(backend.requests[0].prompt_ids)
    results = output.results
    aime, math500 = results["benchmarks"]["aime24"], results["benchmarks"]["math500"]
    assert aime["metric"] == "avg@64" and aime["accuracy"] == pytest.approx(0.5)
    assert aime["pass_at_k"]["2"] == pytest.approx(pass_at_k(64, 32, 2))
    assert list(aime["pass_at_k"]) == ["1", "2", "4", "8", "16", "32", "64"]
    assert math500["accuracy"] == 0.0 and math500["answer_rate"] == 0.0 and math500["format_rate"] == 0.0
    assert results["groups"]["math"]["accuracy"] == pytest.approx(0.25)  # unweighted mean of 0.5 and 0.0
    assert results["groups"]["math"]["complete"] is False
    assert results["groups"]["math"]["missing"] == ["aime25", "amc", "minerva", "olympiad"]
    assert results["groups"]["ood"]["accuracy"] is None
    assert results["settings"]["system_prompt_replaced_in_problems"] == 2
    assert len(output.samples) == 66 and sum(s["correct"] for s in output.samples) == 32

    paths = ev.write_report(output, tmp_path / "run")
    table = ev.render_table1_markdown([results])
    assert "| scripted | 50.0 | – | – | 0.0 | – | – | 25.0† | – | – | – | – |" in table
    assert table in paths["markdown"].read_text()
    reloaded = ev.load_results(tmp_path / "run")
    assert reloaded["benchmarks"]["aime24"]["accuracy"] == pytest.approx(0.5)


def test_compare_markdown_with_deltas_vs_baseline(benchmark_dir, tokenizer, tmp_path):
    sets = load_benchmarks(["math6"], benchmark_dir=benchmark_dir, select=["math500", "minerva"], max_problems=2)
    right = {"Convert the point": [tagged("(3, \\frac{\\pi}{2})")], "": ["no"]}
    wrong = {"": [tagged("0")]}
    settings = EvalSettings(num_samples=4, pass_k=[1, 2, 4])
    for label, script in (("base", wrong), ("ampo", right)):
        output = ev.evaluate(ScriptedBackend(tokenizer, script), sets, settings, label=label)
        ev.write_report(output, tmp_path / label, plot=False)
    runs = [ev.load_results(tmp_path / label) for label in ("base", "ampo")]
    text = ev.render_compare_markdown(runs, baseline="base")
    assert "| MATH-500 | 0.0 | 50.0 | +50.0 |" in text
    assert "| Minerva | 0.0 | 0.0 | +0.0 |" in text
    assert "| Math avg. | 0.0 | 25.0 | +25.0 |" in text
    assert "| base | – | – | – | 0.0 | 0.0 | – | 0.0† |" in text


@pytest.fixture
def cli():
    """scripts/evaluate.py loaded as a module, for in-process CLI calls."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("ampo_evaluate_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_compare_and_plot_write_files(benchmark_dir, tokenizer, tmp_path, cli):
    sets = load_benchmarks(["math6"], benchmark_dir=benchmark_dir, select=["aime24", "math500"], max_problems=2)
    scripts = {"a": {"Every morning Aya": [tagged("204"), "x"], "": ["x"]}, "b": {"": [tagged("0")]}}
    for label, script in scripts.items():
        output = ev.evaluate(ScriptedBackend(tokenizer, script), sets, EvalSettings(num_samples=1), label=label)
        ev.write_report(output, tmp_path / label, plot=False)
    main = cli.main
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b" / "results.json"),
                 "--output", str(tmp_path / "cmp.md"), "--plot", str(tmp_path / "cmp.png")]) == 0  # fmt: skip
    text = (tmp_path / "cmp.md").read_text()
    assert "a (baseline)" in text and "| AIME24 | 25.0 | 0.0 | -25.0 |" in text
    assert main(["plot", str(tmp_path / "a"), str(tmp_path / "b"), "--labels", "A", "B", "--output",
                 str(tmp_path / "curves.png")]) == 0  # fmt: skip
    for png in (tmp_path / "cmp.png", tmp_path / "curves.png"):
        assert_png_has_content(png)
    assert main(["compare", str(tmp_path / "a"), "--baseline", "zzz"]) == 2  # clear error, no traceback
    assert main(["plot", str(tmp_path / "missing"), "--output", str(tmp_path / "x.png")]) == 2


def assert_png_has_content(path: Path) -> None:
    import matplotlib.image as mpimg

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 10_000
    pixels = mpimg.imread(path)
    assert pixels.shape[0] > 200 and pixels.shape[1] > 200 and float(pixels.std()) > 0.05


# ----------------------------------------------------------------------------------------------------------
# Backends: ampo_trl.generation (tested in test_generation.py), used by the evaluator
# ----------------------------------------------------------------------------------------------------------


def test_backends_are_the_shared_ones_and_seed_per_problem(benchmark_dir, tokenizer):
    from ampo_trl import generation
    from ampo_trl.evaluation import runner

    for name in ("GenerationRequest", "SamplingSettings", "render_prompt_ids", "DEFAULT_TEMPERATURE"):
        assert getattr(runner, name) is getattr(generation, name)  # the evaluator samples with the shared backends
    sets = load_benchmarks(["math6"], benchmark_dir=benchmark_dir, select=["aime24"], max_problems=2)
    backend = ScriptedBackend(tokenizer, {"": ["x"]})
    ev.evaluate(backend, sets, EvalSettings(num_samples=1, seed=7, expand_repeats=False))
    assert [r.seed for r in backend.requests] == [None, None]  # default: one seed per generation call
    backend = ScriptedBackend(tokenizer, {"": ["x"]})
    output = ev.evaluate(
        backend, sets, EvalSettings(num_samples=1, seed=7, expand_repeats=False, seed_per_problem=True)
    )
    assert [r.seed for r in backend.requests] == [generation.derive_seed(7, f"aime24-0000{i}") for i in range(2)]
    assert output.results["settings"]["seed_per_problem"] is True


# ----------------------------------------------------------------------------------------------------------
# CLI end to end on the tiny model (CPU)
# ----------------------------------------------------------------------------------------------------------


def test_cli_end_to_end_on_tiny_model(benchmark_dir, tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "AMPO_BENCHMARK_DIR": str(benchmark_dir)}
    command = [
        sys.executable, str(SCRIPT), "--model", tiny_model_dir, "--benchmarks", "math6",
        "--select", "math500", "aime24", "--max-problems", "3", "-n", "2", "--no-expand-repeats",
        "--max-new-tokens", "16", "--backend", "transformers", "--output-dir", str(out), "--label", "tiny",
    ]  # fmt: skip
    completed = subprocess.run(command, capture_output=True, text=True, env=env, timeout=240)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "| tiny | 0.0 |" in completed.stdout  # the Table 1 row is printed (a random model scores 0)
    results = json.loads((out / "results.json").read_text())
    assert set(results["benchmarks"]) == {"aime24", "math500"}
    for b in results["benchmarks"].values():
        assert b["num_problems"] == 3 and b["num_samples"] == 6 and b["metric"] == "avg@2"
        assert 0 < b["mean_length"] <= 16 and set(b["pass_at_k"]) == {"1", "2"}
    settings = results["settings"]
    assert (settings["temperature"], settings["top_p"], settings["max_new_tokens"]) == (0.6, 1.0, 16)
    assert settings["system_prompt"] == SYSTEM_PROMPT and settings["backend"]["backend"] == "transformers"
    assert results["data"]["skipped_rows_total"] == 0
    lines = (out / "generations.jsonl").read_text().splitlines()
    assert len(lines) == 12
    sample = json.loads(lines[0])
    assert {"benchmark", "problem_id", "sample_index", "question", "gold", "response", "correct", "num_tokens"} <= set(
        sample
    )
    markdown = (out / "results.md").read_text()
    assert "| Model | AIME24 | AIME25 | AMC | MATH-500 | Minerva | Olympiad | Avg. | ARC-c | GPQA* |" in markdown
    assert "## pass@k (%)" in markdown
    assert_png_has_content(out / "pass_at_k.png")

    failed = subprocess.run(
        [sys.executable, str(SCRIPT), "--model", tiny_model_dir, "--benchmarks", "nope"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert failed.returncode == 2 and "matches no file" in failed.stderr and "Traceback" not in failed.stderr


# ----------------------------------------------------------------------------------------------------------
# Training-time evaluation
# ----------------------------------------------------------------------------------------------------------


def test_eval_callback_logs_through_the_trainer(benchmark_dir, tmp_path):
    from helpers import make_trainer

    trainer = make_trainer(tmp_path, max_steps=2, guidance_trigger="never")
    callback = AMPOEvalCallback(
        benchmark_dir / "train_validation.parquet",
        every_n_steps=1,
        num_samples=2,
        max_new_tokens=8,
        max_problems=1,
        expand_repeats=False,
    ).attach(trainer)
    assert callback in trainer.callback_handler.callbacks
    trainer.train()
    evals = [entry for entry in trainer.state.log_history if "eval/mean_accuracy" in entry]
    assert [entry["step"] for entry in evals] == [1, 2]
    keys = set(evals[0])
    for benchmark in ("aime24", "amc", "math500", "minerva", "olympiad"):
        assert {f"eval/{benchmark}/accuracy", f"eval/{benchmark}/pass@2", f"eval/{benchmark}/mean_length"} <= keys
    assert {"eval/math_avg", "eval/mean_length", "eval/format_rate", "eval/truncation_rate"} <= keys
    assert 0 < evals[0]["eval/mean_length"] <= 8
    # The trainer's own step logs still happen (Trainer.log resets control.should_log; the callback restores it).
    assert [entry["step"] for entry in trainer.state.log_history if "loss" in entry] == [1, 2]
    assert trainer.model.training  # restored after evaluation
    assert [h["step"] for h in callback.history] == [1, 2]


def test_eval_callback_validates_arguments(benchmark_dir):
    with pytest.raises(ValueError, match="every_n_steps"):
        AMPOEvalCallback(benchmark_dir / "train_validation.parquet", every_n_steps=0)
    rows = [{"question": "1+1?", "answer": "2"}]
    callback = AMPOEvalCallback(rows, every_n_steps=5)
    assert [p.gold for p in callback.benchmark_set.problems] == ["2"]


# Problems of different prompt lengths, 2 sampled responses each (temperature 0.6), 2 per generation batch: the 5
# batches mix problems, and 2 processes split them 3 / 2 (+ 1 padding batch on rank 1).
EVAL_ROWS = [{"question": "What is " + "+".join(str(k) for k in range(i + 2)) + "?", "answer": "0"} for i in range(5)]
EVAL_OPTIONS = {"every_n_steps": 2, "num_samples": 2, "max_new_tokens": 6, "batch_size": 2, "seed": 3}

DISTRIBUTED_SCRIPT = textwrap.dedent(
    """
    import json, os, sys, warnings
    import torch
    import torch.distributed as dist
    from types import SimpleNamespace
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    from ampo_trl.evaluation import AMPOEvalCallback
    from ampo_trl.demo.tiny import build_tiny_model_and_tokenizer

    spec = json.loads(open(sys.argv[2]).read())
    model, tokenizer = build_tiny_model_and_tokenizer(seed=0)
    model.train()
    callback = AMPOEvalCallback(spec["rows"], **spec["options"])
    state = SimpleNamespace(global_step=2, log_history=[])
    warnings.simplefilter("ignore")
    callback.on_step_end(None, state, SimpleNamespace(), model=model, processing_class=tokenizer)
    state.global_step = 3  # not a multiple of every_n_steps: no evaluation, no collective
    callback.on_step_end(None, state, SimpleNamespace(), model=model, processing_class=tokenizer)
    dist.barrier()
    out = {
        "rank": dist.get_rank(),
        "history": callback.history,
        "training": model.training,
        "num_samples": callback.last_results["overall"]["num_samples"],
        "responses": [[s["problem_id"], s["sample_index"], s["response"]] for s in callback.last_samples],
    }
    with open(os.path.join(sys.argv[1], f"rank{dist.get_rank()}.json"), "w") as handle:
        json.dump(out, handle)
    dist.destroy_process_group()
    """
)


def run_two_process_evaluation(tmp_path: Path) -> list[dict]:
    """DISTRIBUTED_SCRIPT under `torchrun --nproc_per_node 2` (gloo); a hang fails the test after a time limit."""
    script = tmp_path / "dist_eval.py"
    script.write_text(DISTRIBUTED_SCRIPT)
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"rows": EVAL_ROWS, "options": EVAL_OPTIONS}))
    launch_workers(
        script,
        [str(tmp_path), str(spec)],
        2,
        log_dir=tmp_path / "logs",
        time_limit=150,
        env={"PYTHONPATH": str(REPO)},
        description="the 2-process evaluation",
    )
    return [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]


@pytest.mark.distributed
def test_eval_callback_gives_the_same_metrics_on_one_and_two_processes(tmp_path):
    from types import SimpleNamespace

    from ampo_trl.demo.tiny import build_tiny_model_and_tokenizer

    ranks = run_two_process_evaluation(tmp_path)
    assert _same_but_seconds(ranks)  # every process computed and logged the same metrics
    (history,) = ranks[0]["history"]
    assert history["step"] == 2
    assert history["eval/mean_accuracy"] == 0.0 and 0 < history["eval/mean_length"] <= 6
    assert all(rank["training"] for rank in ranks)
    assert [rank["num_samples"] for rank in ranks] == [10, 10]  # 6 + 4 real samples gathered, the padding dropped

    # The same evaluation in this (single) process: identical responses and metrics.
    model, tokenizer = build_tiny_model_and_tokenizer(seed=0)
    callback = AMPOEvalCallback(EVAL_ROWS, **EVAL_OPTIONS)
    state = SimpleNamespace(global_step=2, log_history=[])
    with pytest.warns(UserWarning, match="no trainer"):
        callback.on_step_end(None, state, SimpleNamespace(), model=model, processing_class=tokenizer)
    single = [[s["problem_id"], s["sample_index"], s["response"]] for s in callback.last_samples]
    assert len({response for _, _, response in single}) > 1  # sampled, not greedy: the seeds matter
    assert ranks[0]["responses"] == ranks[1]["responses"] == single
    assert _same_but_seconds([ranks[0], {"history": callback.history}])


def test_eval_batches_do_not_depend_on_the_number_of_processes():
    from ampo_trl.evaluation.callback import batches_for_rank, plan_eval_batches

    samples = [(index, s) for index in range(4) for s in range(3)]
    lengths, ids = [5, 9, 5, 7], ["a", "b", "c", "d"]
    batches = plan_eval_batches(samples, lengths, ids, batch_size=5, seed=0)
    assert [batch for _, batch in batches] == [
        [(1, 0), (1, 1), (1, 2), (3, 0), (3, 1)],  # longest prompts first, ties in (problem, sample) order
        [(3, 2), (0, 0), (0, 1), (0, 2), (2, 0)],
        [(2, 1), (2, 2)],
    ]
    seeds = [seed for seed, _ in batches]
    assert len(set(seeds)) == 3 and seeds == [seed for seed, _ in plan_eval_batches(samples, lengths, ids, 5, 0)]
    assert seeds != [seed for seed, _ in plan_eval_batches(samples, lengths, ids, 5, 1)]
    assert plan_eval_batches(samples, lengths, ["x", "b", "c", "d"], 5, 0)[1][0] != seeds[1]  # keyed by problem id
    for world_size in (1, 2, 3, 4, 5):
        dealt = [batches_for_rank(len(batches), world_size, rank) for rank in range(world_size)]
        assert sorted(index for mine, _ in dealt for index in mine) == [0, 1, 2]  # every batch exactly once
        assert len({calls for _, calls in dealt}) == 1  # the same number of generate calls everywhere
    assert batches_for_rank(3, 2, 1) == ([1], 2)  # one padding call
    with pytest.raises(ValueError, match="batch_size"):
        plan_eval_batches(samples, lengths, ids, batch_size=0, seed=0)


def _same_but_seconds(ranks) -> bool:
    strip = [{k: v for k, v in r["history"][0].items() if k != "eval/seconds"} for r in ranks]
    return strip[0] == strip[1]
