"""The pool schema: parsing, the validator, converters from the official formats, SFT export and `ampo-pool`."""

import json
import re

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from datasets import Dataset
from helpers import shared_benchmark_dir

from ampo_trl.answers import SYSTEM_PROMPT
from ampo_trl.cli.pool import main as pool_cli
from ampo_trl.errors import DataFormatError
from ampo_trl.pool import (
    TeacherSolution,
    detect_pool_format,
    export_sft_dataset,
    load_pool_dataset,
    normalize_solution,
    parse_pool,
    to_canonical,
    validate_pool_dataset,
)

BENCHMARKS = shared_benchmark_dir()
TRAIN_VALIDATION = BENCHMARKS / "train_validation.parquet"


def good_row(i=0, **overrides):
    row = {
        "prompt": [{"role": "user", "content": f"What is {i}+1?"}],
        "answer": str(i + 1),
        "teacher_solutions": [
            {"teacher": "alpha", "text": f"<think>{i}+1</think><answer>{i + 1}</answer>"},
            {"teacher": "beta", "text": f"Adding one: <answer>{i + 1}</answer>"},
        ],
    }
    row.update(overrides)
    return row


def benchmark_rows(count):
    """The first rows of the authors' parquet schema (read-only shared data, never copied into the repository)."""
    return pq.read_table(TRAIN_VALIDATION).slice(0, count).to_pylist()


# ------------------------------------------------------------------------------------------------------- parsing


def test_parse_pool_reads_every_accepted_spelling():
    canonical = [{"teacher": "a", "text": "x<answer>1</answer>", "length": 7, "quality_score": 0.5}]
    assert parse_pool(canonical) == [TeacherSolution("a", "x<answer>1</answer>", length=7, quality_score=0.5)]
    ampo = [{"content": "c", "source": "Qwen3-8B", "quality_score": 0.25, "role": "assistant"}]
    assert parse_pool(ampo) == [TeacherSolution("Qwen3-8B", "c", quality_score=0.25)]
    assert parse_pool(["s0", "s1"]) == [TeacherSolution("teacher_0", "s0"), TeacherSolution("teacher_1", "s1")]
    # a {teacher: text} mapping as Arrow stores it: teachers absent from this row are None
    assert parse_pool({"a": "ta", "b": None, "c": "tc"}) == [TeacherSolution("a", "ta"), TeacherSolution("c", "tc")]
    assert parse_pool(json.dumps(canonical))[0].teacher == "a"
    assert parse_pool(None) == [] and parse_pool("null") == []


@pytest.mark.parametrize(
    "value, message",
    [
        ("not json", r"row 3, column 'pool': a string pool must be JSON"),
        ({"teacher": "a", "text": "x"}, r"row 3, column 'pool': expected a list of teacher solutions, got a single"),
        (42, r"row 3, column 'pool': expected a list of .* got int"),
        ([{"teacher": "a", "text": "x"}, 5], r"row 3, column 'pool', entry 1: expected a dict"),
        (
            [{"teacher": "a", "body": "x"}],
            r"row 3, column 'pool', entry 0: no solution text.*found \['body', 'teacher'\]",
        ),
        ([{"teacher": "a", "text": 5}], r"row 3, column 'pool', entry 0: 'text' must be a string, got int"),
    ],
)
def test_parse_pool_errors_name_row_column_and_entry(value, message):
    with pytest.raises(DataFormatError, match=message):
        parse_pool(value, row_index=3, column="pool")


# ----------------------------------------------------------------------------------------------------- validator


def test_validator_reports_every_kind_of_broken_row_with_row_and_field():
    rows = [good_row(i) for i in range(12)]
    rows[1]["answer"] = None  # missing answer
    rows[2]["answer"] = "  "  # empty answer
    rows[3]["teacher_solutions"] = {"teacher": "a", "text": "<answer>4</answer>"}  # pool not a list
    rows[4]["teacher_solutions"][1] = {"teacher": "beta"}  # entry without text
    rows[5]["teacher_solutions"][0] = {"text": "<answer>6</answer>"}  # entry without teacher
    rows[6]["teacher_solutions"][1]["teacher"] = "alpha"  # duplicate teacher
    rows[7]["teacher_solutions"][1]["text"] = "so it is \\boxed{8}"  # no <answer> tag
    rows[8]["teacher_solutions"][0]["text"] = "<answer>9</answer> or <answer>9</answer>"  # two pairs
    rows[9]["teacher_solutions"] = []  # empty pool
    rows[10]["teacher_solutions"][0]["text"] = "   "  # empty text
    rows[11]["prompt"] = []  # no prompt
    report = validate_pool_dataset(rows)

    def where(kind):
        return [(p.row_index, p.field) for p in report.problems(kind)]

    assert where("unreadable_pool") == [(3, "teacher_solutions"), (4, "teacher_solutions[1]")]
    assert where("bad_prompt") == [(11, "prompt")]
    assert where("empty_answer") == [(1, "answer"), (2, "answer")]
    assert where("missing_teacher") == [(5, "teacher_solutions[0].teacher")]
    assert where("duplicate_teacher") == [(6, "teacher_solutions[1].teacher")]
    assert where("no_answer_tag") == [(7, "teacher_solutions[1].text")]
    assert where("bad_answer_format") == [(8, "teacher_solutions[0].text")]
    assert where("empty_pool") == [(9, "teacher_solutions")]
    assert where("empty_text") == [(10, "teacher_solutions[0].text")]
    assert report.error_counts == {"unreadable_pool": 2, "bad_prompt": 1}
    assert report.num_errors == 3 and report.num_warnings == 8 and not report.ok
    assert "entry 1: no solution text" in report.problems("unreadable_pool")[1].message
    assert "teacher 'alpha' appears more than once" in report.problems("duplicate_teacher")[0].message
    # statistics: rows 3 and 4 are unreadable; 9 has no solution; 10 has one usable entry
    assert report.stats.rows == 12
    assert report.stats.pool_size_histogram == {0: 1, 1: 1, 2: 8}
    assert report.stats.teacher_counts == {"alpha": 8, "beta": 8, "teacher_0": 1}  # row 6 has alpha twice
    summary = report.summary()
    assert "3 error(s), 8 warning(s)" in summary and "error unreadable_pool: 2" in summary
    assert "warning empty_answer: 2" in summary and "pool sizes (solutions: rows): 0: 1, 1: 1, 2: 8" in summary


def test_raise_if_fatal_lists_the_first_problems_and_the_total():
    rows = [good_row(i, teacher_solutions=[{"teacher": "a"}]) for i in range(25)]
    report = validate_pool_dataset(rows)
    with pytest.raises(DataFormatError) as caught:
        report.raise_if_fatal()
    message = str(caught.value)
    assert "25 fatal problem(s) (unreadable_pool: 25)" in message
    assert "row 19, column 'teacher_solutions', entry 0: no solution text" in message
    assert "row 20," not in message and "... and 5 more." in message
    assert validate_pool_dataset([good_row()]).raise_if_fatal().ok  # nothing fatal: returns the report


def test_missing_columns_are_fatal_and_suggest_the_converter():
    report = validate_pool_dataset([{"prompt": "q", "target_lst": [], "reward_model": {"ground_truth": "1"}}])
    fields = [p.field for p in report.errors]
    assert fields == ["teacher_solutions", "answer"]
    assert "look like the 'ampo' format" in report.errors[0].message and "to_canonical" in report.errors[0].message
    with pytest.raises(DataFormatError, match="no column 'teacher_solutions'"):
        report.raise_if_fatal()


def test_token_lengths_and_too_long_use_the_students_tokenizer(tiny_model_and_tokenizer):
    _, tokenizer = tiny_model_and_tokenizer
    # byte-level tokenizer: one token per byte, tags are single tokens, + EOS -> "abc<answer>1</answer>" = 7
    rows = [good_row(0, teacher_solutions=[{"teacher": "a", "text": "abc<answer>1</answer>"}])]
    rows.append(good_row(1, teacher_solutions=[{"teacher": "a", "text": "abcd<answer>2</answer>"}]))
    report = validate_pool_dataset(rows, tokenizer=tokenizer, max_teacher_length=7)
    assert [(p.row_index, p.field) for p in report.problems("too_long")] == [(1, "teacher_solutions[0].text")]
    assert "8 tokens with EOS, more than max_teacher_length=7" in report.problems("too_long")[0].message
    assert report.stats.token_length_percentiles["min"] == 7 and report.stats.token_length_percentiles["max"] == 8
    assert report.stats.per_teacher["a"]["tokens_p50"] == 7.5
    assert validate_pool_dataset(rows, tokenizer=tokenizer).warning_counts == {}  # no limit: lengths only
    with pytest.raises(ValueError, match="max_teacher_length needs a tokenizer"):
        validate_pool_dataset(rows, max_teacher_length=7)


def test_check_answers_verifies_each_solution(monkeypatch):
    monkeypatch.setenv("AMPO_VERIFY_IN_PROCESS", "1")
    row = good_row(0, answer="\\frac{1}{2}")
    row["teacher_solutions"] = [
        {"teacher": "a", "text": "<answer>0.5</answer>"},
        {"teacher": "b", "text": "<answer>1/3</answer>"},
    ]
    report = validate_pool_dataset([row], check_answers=True)
    assert [(p.row_index, p.field) for p in report.problems("wrong_answer")] == [(0, "teacher_solutions[1].text")]
    assert (
        "'1/3' does not verify against the ground truth '\\\\frac{1}{2}'" in report.problems("wrong_answer")[0].message
    )


def test_statistics_on_10k_rows():
    # (speed is measured by scripts, not asserted in tests: a busy CI machine would flake)
    rows = [good_row(i) for i in range(10_000)]
    for i in range(0, 10_000, 4):
        rows[i]["teacher_solutions"] = rows[i]["teacher_solutions"][:1]
    dataset = Dataset.from_list(rows)
    report = validate_pool_dataset(dataset)
    assert report.ok and report.num_warnings == 0
    stats = report.stats
    assert stats.rows == 10_000 and stats.solutions == 17_500
    assert stats.pool_size_histogram == {1: 2_500, 2: 7_500}
    assert stats.teacher_counts == {"alpha": 10_000, "beta": 7_500}
    alpha = [len(f"<think>{i}+1</think><answer>{i + 1}</answer>") for i in range(10_000)]
    assert stats.per_teacher["alpha"]["chars_min"] == min(alpha) and stats.per_teacher["alpha"]["chars_max"] == max(
        alpha
    )
    assert stats.char_length_percentiles["p50"] > stats.char_length_percentiles["p10"]


# ---------------------------------------------------------------------------------------------------- converters


def test_detect_pool_format():
    assert detect_pool_format(["prompt", "answer", "teacher_solutions"]) == "canonical"
    assert detect_pool_format(["data_source", "prompt", "target_lst", "reward_model", "extra_info"]) == "ampo"
    assert detect_pool_format(["prompt", "target", "reward_model"]) == "luffy"
    assert detect_pool_format(["problem", "answer", "solutions"]) == "solutions_jsonl"
    assert detect_pool_format(["prompt", "pool", "answer"], pool_column="pool") == "canonical"
    # the authors' evaluation parquet: prompts and answers, no pool
    assert detect_pool_format(pq.read_schema(TRAIN_VALIDATION).names) is None


def test_normalize_solution_rules():
    r1_distill = "Let me add.\n</think>\n\nSo the sum is $\\boxed{\\frac{3}{4}}$."
    assert normalize_solution(r1_distill) == (
        "<think>\nLet me add.\n</think>\n\nSo the sum is $\\boxed{\\frac{3}{4}}$.\n\n<answer>\\frac{3}{4}</answer>"
    )
    qwen3 = "<think>\n2+3\n</think>\n\nThe answer is \\boxed{5}.\n"
    assert normalize_solution(qwen3) == "<think>\n2+3\n</think>\n\nThe answer is \\boxed{5}.\n\n<answer>5</answer>"
    plain = "Steps... \\boxed{12}"
    assert normalize_solution(plain) == "Steps... \\boxed{12}\n\n<answer>12</answer>"
    for unchanged in (
        "<think>x</think><answer>\\boxed{1}</answer>",  # already tagged
        "<think>thinking \\boxed{3} but never finished",  # truncated thought
        "<think>a \\boxed{3}</think> the answer part has no box",  # only a box inside the thought
        "no answer at all",
    ):
        assert normalize_solution(unchanged) == unchanged


AMPO_SCHEMA = pa.schema(  # the dataset card of SII-Enigma/OpenR1-Math-4LongCoTs-8.5k
    [
        ("data_source", pa.string()),
        ("prompt", pa.list_(pa.struct([("content", pa.string()), ("role", pa.string())]))),
        (
            "target_lst",
            pa.list_(
                pa.struct(
                    [
                        ("content", pa.string()),
                        ("quality_score", pa.float64()),
                        ("role", pa.string()),
                        ("source", pa.string()),
                    ]
                )
            ),
        ),
        ("ability", pa.string()),
        ("reward_model", pa.struct([("ground_truth", pa.string()), ("style", pa.string())])),
        (
            "extra_info",
            pa.struct([("index", pa.int64()), ("num_teacher_models", pa.int64()), ("split", pa.string())]),
        ),
    ]
)


def ampo_parquet(tmp_path):
    rows = []
    for i, source in enumerate(benchmark_rows(3)):
        gold = source["reward_model"]["ground_truth"]
        targets = [
            {
                "content": f"<think>r{i}</think>\n<answer>{gold}</answer>",
                "quality_score": 0.9,
                "role": "assistant",
                "source": "Qwen3-8B",
            },
            {
                "content": f"<think>s{i}</think>\nSo $\\boxed{{{gold}}}$.",
                "quality_score": 0.4,
                "role": "assistant",
                "source": "DeepSeek-R1-Distill-Qwen-7B",
            },
        ]
        if i == 2:
            targets.append({"content": None, "quality_score": None, "role": "assistant", "source": "OpenR1-Qwen-7B"})
        rows.append(
            {
                "data_source": source["data_source"],
                "prompt": source["prompt"],
                "target_lst": targets,
                "ability": "math",
                "reward_model": source["reward_model"],
                "extra_info": {"index": i, "num_teacher_models": len(targets), "split": "train"},
            }
        )
    path = tmp_path / "ampo.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=AMPO_SCHEMA), path)
    return path, rows


def test_ampo_hub_format_converts_to_the_canonical_schema(tmp_path):
    path, rows = ampo_parquet(tmp_path)
    dataset = load_pool_dataset(path)  # detects the format and converts
    assert set(dataset.column_names) == {
        "data_source",
        "prompt",
        "ability",
        "reward_model",
        "extra_info",
        "answer",
        "teacher_solutions",
    }
    first = dataset[0]
    assert first["answer"] == "204"  # reward_model.ground_truth
    assert first["prompt"] == rows[0]["prompt"]  # stored prompt kept (system_prompt=None)
    assert first["reward_model"] == rows[0]["reward_model"] and first["extra_info"]["num_teacher_models"] == 2
    assert [(e["teacher"], e["quality_score"]) for e in first["teacher_solutions"]] == [
        ("Qwen3-8B", 0.9),
        ("DeepSeek-R1-Distill-Qwen-7B", 0.4),
    ]
    assert first["teacher_solutions"][0]["text"] == "<think>r0</think>\n<answer>204</answer>"  # tagged: unchanged
    assert first["teacher_solutions"][1]["text"].endswith("So $\\boxed{204}$.\n\n<answer>204</answer>")  # normalised
    assert len(dataset[2]["teacher_solutions"]) == 2  # the entry without content is dropped, and counted:
    _, counts = to_canonical(Dataset.from_parquet(str(path)), return_counts=True)
    assert counts == {"rows": 3, "normalized_entries": 3, "dropped_entries_without_text": 1}
    report = validate_pool_dataset(dataset)
    assert report.ok and report.num_warnings == 0 and report.stats.pool_size_histogram == {2: 3}


def test_ampo_conversion_with_the_papers_system_prompt_and_without_normalising(tmp_path):
    path, _ = ampo_parquet(tmp_path)
    raw = Dataset.from_parquet(str(path))
    dataset = to_canonical(raw, system_prompt=SYSTEM_PROMPT, normalize=False, keep_source_columns=True)
    assert dataset[0]["prompt"][0] == {"role": "system", "content": SYSTEM_PROMPT}
    assert dataset[0]["prompt"][1]["role"] == "user" and len(dataset[0]["prompt"]) == 2  # old system prompt replaced
    assert "target_lst" in dataset.column_names
    assert "<answer>" not in dataset[0]["teacher_solutions"][1]["text"]
    assert to_canonical(raw, system_prompt="")[0]["prompt"][0]["role"] == "user"  # system messages removed


@pytest.mark.parametrize("target_kind", ["messages", "string"])
def test_luffy_format_converts_with_one_teacher(tmp_path, target_kind):
    rows = benchmark_rows(2)
    for i, row in enumerate(rows):
        text = f"<think>\nreasoning {i}\n</think>\n\nThus $\\boxed{{{row['reward_model']['ground_truth']}}}$."
        row["target"] = [{"role": "assistant", "content": text}] if target_kind == "messages" else text
    path = tmp_path / "luffy.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    dataset = load_pool_dataset(path, system_prompt=SYSTEM_PROMPT)
    assert "target" not in dataset.column_names and dataset[1]["answer"] == rows[1]["reward_model"]["ground_truth"]
    pool = dataset[0]["teacher_solutions"]
    assert [entry["teacher"] for entry in pool] == ["DeepSeek-R1"]
    assert pool[0]["text"] == "<think>\nreasoning 0\n</think>\n\nThus $\\boxed{204}$.\n\n<answer>204</answer>"
    assert [m["role"] for m in dataset[0]["prompt"]] == ["system", "user"]
    assert dataset[0]["prompt"][0]["content"] == SYSTEM_PROMPT
    named = to_canonical(Dataset.from_parquet(str(path)), teacher_name="R1")
    assert named[0]["teacher_solutions"][0]["teacher"] == "R1"


def test_solutions_jsonl_converts_per_row_teacher_mappings(tmp_path):
    rows = [
        {
            "question": "What is 2+3?",
            "answer": "5",
            "solutions": {"alpha": "<answer>5</answer>", "beta": "\\boxed{5}"},
        },
        {"problem": "What is 3+4?", "answer": 7, "solutions": {"gamma": "<answer>7</answer>"}},
        {"question": "What is 1+1?", "answer": "2", "solutions": {}, "level": 1},
    ]
    path = tmp_path / "pool.jsonl"
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    dataset = load_pool_dataset(path)
    assert dataset[0]["teacher_solutions"] == [
        {"teacher": "alpha", "text": "<answer>5</answer>"},
        {"teacher": "beta", "text": "\\boxed{5}\n\n<answer>5</answer>"},
    ]
    assert dataset[1]["teacher_solutions"] == [{"teacher": "gamma", "text": "<answer>7</answer>"}]
    assert dataset[1]["prompt"] == [{"role": "user", "content": "What is 3+4?"}] and dataset[1]["answer"] == "7"
    assert dataset[2]["teacher_solutions"] == [] and dataset[2]["level"] == 1
    # Loaded by Arrow first, the mappings become one struct with every teacher (None where absent): same result
    columns = ["question", "problem", "answer", "solutions", "level"]
    via_arrow = to_canonical(
        Dataset.from_dict({c: [str(r[c]) if c == "answer" else r.get(c) for r in rows] for c in columns})
    )
    assert via_arrow["teacher_solutions"] == dataset["teacher_solutions"]
    with pytest.raises(ValueError, match="Cannot tell the pool format"):
        to_canonical([{"prompt": "q", "answer": "1"}])


def test_converted_official_data_trains_without_manual_steps(tmp_path):
    from helpers import exact_answer_reward, generate, make_trainer

    path, _ = ampo_parquet(tmp_path)
    dataset = load_pool_dataset(path)
    rows = [dict(row, prompt=[{"role": "user", "content": f"Short question {i}?"}]) for i, row in enumerate(dataset)]
    trainer = make_trainer(
        tmp_path, rows=rows[:2], reward_funcs=[exact_answer_reward], max_teacher_length=128, max_completion_length=8
    )
    batch = generate(trainer, rows[:2])
    assert batch["ampo_is_teacher"].sum() == 4  # both groups fail (random model): 2 teacher rows each


# ----------------------------------------------------------------------------------------------------- SFT export


def test_export_sft_expands_every_question_solution_pair():
    rows = [good_row(0), good_row(1, teacher_solutions=[]), good_row(2)]
    rows[2]["teacher_solutions"].append({"teacher": "gamma", "text": ""})
    rows[2]["prompt"] = [{"role": "system", "content": "old"}, {"role": "user", "content": "What is 2+1?"}]
    sft, counts = export_sft_dataset(Dataset.from_list(rows), keep_columns=["answer"], return_counts=True)
    assert counts == {"rows": 3, "pairs": 4, "rows_without_solutions": 1, "empty_text_skipped": 1}
    assert sft.column_names == ["messages", "teacher", "answer"]
    assert sft["teacher"] == ["alpha", "beta", "alpha", "beta"] and sft["answer"] == ["1", "1", "3", "3"]
    assert sft[0]["messages"] == [
        {"role": "user", "content": "What is 0+1?"},
        {"role": "assistant", "content": "<think>0+1</think><answer>1</answer>"},
    ]
    assert sft[2]["messages"][0] == {"role": "system", "content": "old"}  # the stored prompt is kept
    replaced = export_sft_dataset(rows, system_prompt=SYSTEM_PROMPT, teacher_column=None)
    assert replaced.column_names == ["messages"]
    assert [m["role"] for m in replaced[2]["messages"]] == ["system", "user", "assistant"]
    assert replaced[2]["messages"][0]["content"] == SYSTEM_PROMPT and replaced[0]["messages"][0]["role"] == "system"
    plain = export_sft_dataset([good_row(0, prompt="What is 0+1?")], system_prompt="")
    assert plain[0]["messages"][0] == {"role": "user", "content": "What is 0+1?"}


# ------------------------------------------------------------------------------------------------------ ampo-pool


def test_cli_stats_prints_tables_and_writes_a_png(tmp_path, capsys):
    rows = [good_row(i) for i in range(6)]
    rows[0]["teacher_solutions"] = rows[0]["teacher_solutions"][:1]
    rows[1]["teacher_solutions"][1]["text"] = "no tag"
    path = tmp_path / "pool.parquet"
    Dataset.from_list(rows).to_parquet(str(path))
    png = tmp_path / "hist.png"
    assert pool_cli(["stats", str(path), "--png", str(png)]) == 0
    out = capsys.readouterr().out
    assert "6 rows, 11 solutions" in out
    assert out.count("alpha") == 1 and "100.0%" in out and "83.3%" in out  # beta in 5 of 6 rows
    assert re.search(r"pool size +rows +share\n[- ]+\n +1 +1 +16\.7%", out)
    assert re.search(r"no_answer_tag +warning +1\n", out)
    assert png.stat().st_size > 5_000 and png.read_bytes()[:4] == b"\x89PNG"
    assert pool_cli(["stats", str(path), "--json"]) == 0
    numbers = json.loads(capsys.readouterr().out)
    assert numbers["stats"]["pool_size_histogram"] == {"1": 1, "2": 5} and numbers["warnings"] == {"no_answer_tag": 1}


def test_cli_validate_convert_and_export(tmp_path, capsys):
    broken = tmp_path / "broken.jsonl"
    broken.write_text(json.dumps(good_row(0, teacher_solutions=[{"teacher": "a"}])) + "\n")
    assert pool_cli(["validate", str(broken)]) == 1
    assert "row 0, column 'teacher_solutions', entry 0: no solution text" in capsys.readouterr().out

    path, _ = ampo_parquet(tmp_path)
    converted = tmp_path / "canonical.parquet"
    assert pool_cli(["convert", str(path), str(converted), "--paper-system-prompt"]) == 0
    assert "Converted 3 rows" in capsys.readouterr().out
    dataset = Dataset.from_parquet(str(converted))
    assert (
        dataset[0]["prompt"][0]["content"] == SYSTEM_PROMPT and detect_pool_format(dataset.column_names) == "canonical"
    )

    sft_path = tmp_path / "sft.parquet"
    assert pool_cli(["export-sft", str(path), str(sft_path)]) == 0  # converts the AMPO file on the fly
    assert "Wrote 6 (question, solution) pairs from 3 rows" in capsys.readouterr().out
    assert Dataset.from_parquet(str(sft_path)).column_names == ["messages", "teacher"]


def test_validator_warns_about_special_token_strings_in_solutions():
    from ampo_trl.demo.tiny import build_tiny_tokenizer

    rows = [
        {
            "prompt": "q",
            "answer": "1",
            "teacher_solutions": [{"teacher": "a", "text": "ok<|im_end|> <answer>1</answer>"}],
        },
        {"prompt": "q", "answer": "1", "teacher_solutions": [{"teacher": "a", "text": "clean <answer>1</answer>"}]},
    ]
    report = validate_pool_dataset(rows, tokenizer=build_tiny_tokenizer(), max_teacher_length=100)
    problems = report.problems("special_token_text")
    assert [problem.row_index for problem in problems] == [0]
    assert "<|im_end|>" in problems[0].message
    assert report.ok  # a warning, not fatal
