"""Malformed pool and dataset input is refused with one public error type, `DataFormatError`, naming the file, line
(JSONL), row, column and entry and the fix; never a made-up answer, a private exception or a raw pyarrow error.

The property-based tests generate well-formed and malformed pools and rows: each is either converted exactly (the
result equals what was generated) or refused with `DataFormatError`, never with another exception type."""

import json
import os
import pickle
import tempfile
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from datasets import Dataset
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ampo_trl.answers import MissingGoldError, gold_answer_text, gold_answers_from_kwargs
from ampo_trl.cli.pool import main as pool_cli
from ampo_trl.errors import DataFormatError
from ampo_trl.pool import (
    TeacherSolution,
    convert_ampo_row,
    load_pool_dataset,
    parse_pool,
    to_canonical,
    validate_pool_dataset,
)
from ampo_trl.records import read_records, rows_to_dataset


def canonical_row(i=0, **overrides):
    row = {
        "prompt": f"What is {i}+1?",
        "answer": str(i + 1),
        "teacher_solutions": [{"teacher": "alpha", "text": f"<answer>{i + 1}</answer>"}],
    }
    row.update(overrides)
    return row


def ampo_row(i=0, **overrides):
    row = {
        "prompt": [{"role": "user", "content": f"What is {i}+1?"}],
        "target_lst": [{"content": f"<answer>{i + 1}</answer>", "source": "Qwen3-8B", "quality_score": 0.5}],
        "reward_model": {"ground_truth": str(i + 1), "style": "rule"},
    }
    row.update(overrides)
    return row


def write_jsonl(path, rows):
    with open(path, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")


# --------------------------------------------------------------------------------------------------- the error type
def test_the_error_names_every_part_of_the_place_and_the_fix():
    error = DataFormatError("'text' must be a string, got int.", entry=1, fix="store the text as a string.")
    error = error.located(row=3, column="teacher_solutions").located(file="pool.jsonl", line=4, row=99)
    assert str(error) == (
        "pool.jsonl, line 4, row 3, column 'teacher_solutions', entry 1: 'text' must be a string, got int. "
        "Fix: store the text as a string."
    )
    assert (error.file, error.line, error.row, error.column, error.entry) == (
        "pool.jsonl",
        4,
        3,
        "teacher_solutions",
        1,
    )
    assert isinstance(error, ValueError)
    copy = pickle.loads(pickle.dumps(error))  # datasets.map(num_proc > 1) sends errors between processes
    assert type(copy) is DataFormatError and str(copy) == str(error)
    missing = pickle.loads(pickle.dumps(MissingGoldError("no gold.", row=2)))
    assert type(missing) is MissingGoldError and isinstance(missing, DataFormatError) and missing.row == 2


# -------------------------------------------------------------------------------- every malformed case of issue 10
@pytest.mark.parametrize(
    "pool, message",
    [
        ([{"teacher": "a", "text": 5}], r"row 7, column 'pool', entry 0: 'text' must be a string, got int"),
        ([{"teacher": "a", "text": ["x"]}], r"entry 0: 'text' must be a string, got list"),
        ([{"teacher": "a", "text": b"x"}], r"entry 0: 'text' must be a string, got bytes.*decode bytes"),
        ([b"raw bytes"], r"entry 0: expected a dict .* got bytes"),
        ([["nested"]], r"entry 0: expected a dict .* got list"),
        ("not json", r"row 7, column 'pool': a string pool must be JSON"),
        ({"teacher": "a", "text": "x"}, r"got a single dict.*Fix: wrap the entry in a list"),
        (5, r"row 7, column 'pool': expected a list .* got int"),
        ([{"teacher": ["a"], "text": "x"}], r"entry 0: the teacher name must be a string, got list"),
        ([{"teacher": "a", "text": "x", "length": "12"}], r"entry 0: 'length' must be a whole number, got '12'"),
        ([{"teacher": "a", "text": "x", "length": float("inf")}], r"'length' must be a whole number"),
        ([{"teacher": "a", "text": "x", "quality_score": "high"}], r"'quality_score' must be a finite number"),
    ],
)
def test_malformed_pools_are_refused_naming_row_column_and_entry(pool, message):
    with pytest.raises(DataFormatError, match=message):
        parse_pool(pool, row_index=7, column="pool")
    report = validate_pool_dataset([canonical_row(teacher_solutions=pool)])
    assert report.error_counts == {"unreadable_pool": 1}
    with pytest.raises(DataFormatError, match="unreadable_pool: 1"):
        report.raise_if_fatal()


@pytest.mark.parametrize(
    "reward_model",
    [{"style": "rule"}, {"ground_truth": None, "style": "rule"}, {"ground_truth": "  "}, None],
)
def test_a_row_without_its_gold_is_refused_never_made_up(reward_model):
    rows = [ampo_row(0), ampo_row(1, reward_model=reward_model)]
    with pytest.raises(DataFormatError, match=r"row 1, column 'reward_model'") as caught:
        to_canonical(rows)
    assert "{'style': 'rule'}" not in str(caught.value)
    assert caught.value.fix  # says how to fix it


def test_a_missing_gold_is_refused_from_parquet_too(tmp_path):
    # Arrow fills a key missing from one row with None: the converter must not turn that into an empty answer.
    path = tmp_path / "ampo.parquet"
    pq.write_table(pa.Table.from_pylist([ampo_row(0), ampo_row(1, reward_model={"style": "rule"})]), path)
    with pytest.raises(DataFormatError, match=r"ampo.parquet, row 1, column 'reward_model': .*'ground_truth'"):
        load_pool_dataset(str(path))


def test_a_missing_gold_in_jsonl_is_refused_by_convert_and_validate_naming_the_line(tmp_path, capsys):
    path = tmp_path / "ampo.jsonl"
    with open(path, "w") as handle:
        handle.write(json.dumps(ampo_row(0)) + "\n\n")  # a blank line: rows and lines differ
        handle.write(json.dumps(ampo_row(1, reward_model={"style": "rule"})) + "\n")
    with pytest.raises(DataFormatError, match=r"ampo.jsonl, line 3, row 1, column 'reward_model'"):
        load_pool_dataset(str(path))
    for command in (["convert", str(path), str(tmp_path / "out.parquet")], ["validate", str(path)]):
        assert pool_cli(command) == 2
        err = capsys.readouterr().err
        assert "line 3, row 1, column 'reward_model'" in err and "Traceback" not in err
    assert not (tmp_path / "out.parquet").exists()


def test_validate_reports_an_unreadable_gold_as_fatal_and_an_empty_one_as_a_warning():
    rows = [canonical_row(0), canonical_row(1, answer={"style": "rule"}), canonical_row(2, answer=b"3")]
    rows.append(canonical_row(3, answer=None))
    report = validate_pool_dataset(rows)
    assert [(p.row_index, p.field) for p in report.problems("missing_gold")] == [(1, "answer"), (2, "answer")]
    assert "row 1, column 'answer': a gold-answer dict" in report.problems("missing_gold")[0].message
    assert [p.row_index for p in report.problems("empty_answer")] == [3]
    assert report.error_counts == {"missing_gold": 2}


def test_nan_is_a_missing_value_as_in_pandas():
    entry = {"teacher": "a", "text": "x", "length": float("nan"), "quality_score": float("nan")}
    assert parse_pool([entry]) == [TeacherSolution("a", "x")]
    assert parse_pool(float("nan")) == []


def test_golds_that_are_not_text_raise_the_public_error():
    with pytest.raises(MissingGoldError, match="got bytes"):
        gold_answer_text(b"42")
    with pytest.raises(MissingGoldError, match="got object"):
        gold_answer_text(object())
    assert gold_answer_text(float("nan")) == ""  # pandas' missing value: no gold, not "nan"
    with pytest.raises(DataFormatError, match=r"column 'answer': row 1 of the reward function's batch"):
        gold_answers_from_kwargs({"answer": ["1", b"2"]})


def test_mixed_types_in_a_jsonl_column_name_the_line_and_column(tmp_path, capsys):
    path = tmp_path / "mixed.jsonl"
    write_jsonl(path, [canonical_row(0), canonical_row(1), canonical_row(2, answer=3)])
    message = r"mixed.jsonl, line 3, row 2, column 'answer': this value \(int: '3'\) .* \(str in line 1: '1'\)"
    with pytest.raises(DataFormatError, match=message):
        load_pool_dataset(str(path))
    with pytest.raises(DataFormatError, match=r"line 3, row 2, column 'answer'"):
        rows_to_dataset(read_records(path))
    assert pool_cli(["validate", str(path)]) == 2
    assert "line 3, row 2, column 'answer'" in capsys.readouterr().err
    # a pool column holding a list in one line and a JSON string in another
    write_jsonl(
        path, [canonical_row(0), canonical_row(1, teacher_solutions=json.dumps([{"teacher": "a", "text": "x"}]))]
    )
    with pytest.raises(DataFormatError, match=r"line 2, row 1, column 'teacher_solutions'"):
        load_pool_dataset(str(path))


def test_non_utf8_input_names_the_line(tmp_path, capsys):
    path = tmp_path / "latin1.jsonl"
    with open(path, "wb") as handle:
        handle.write((json.dumps(canonical_row(0)) + "\n").encode())
        handle.write('{"prompt": "Caf\u00e9?", "answer": "1", "teacher_solutions": []}\n'.encode("latin-1"))
    with pytest.raises(DataFormatError, match=r"latin1.jsonl, line 2: not UTF-8 text .* Fix: re-encode the file"):
        load_pool_dataset(str(path))
    assert pool_cli(["validate", str(path)]) == 2
    assert "latin1.jsonl, line 2: not UTF-8" in capsys.readouterr().err
    csv_path = tmp_path / "latin1.csv"
    csv_path.write_bytes("prompt,answer\nq,1\nCaf\u00e9,2\n".encode("latin-1"))
    with pytest.raises(DataFormatError, match=r"latin1.csv, line 3: not UTF-8"):
        load_pool_dataset(str(csv_path))
    json_path = tmp_path / "latin1.json"
    json_path.write_bytes('[\n{"prompt": "q"},\n{"prompt": "Caf\u00e9"}\n]\n'.encode("latin-1"))
    with pytest.raises(DataFormatError, match=r"latin1.json, line 3: not UTF-8"):
        read_records(json_path)


@pytest.mark.parametrize(
    "line, message",
    [("{not json", r"line 2: not valid JSON"), ("[1, 2]", r"line 2: a JSON list, expected an object")],
)
def test_lines_that_are_not_json_objects_are_named(tmp_path, line, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(canonical_row()) + "\n" + line + "\n")
    with pytest.raises(DataFormatError, match=message):
        read_records(path)


def test_json_documents_that_are_not_lists_of_objects(tmp_path):
    path = tmp_path / "doc.json"
    path.write_text(json.dumps([canonical_row(), 5]))
    with pytest.raises(DataFormatError, match=r"doc.json, row 1: a JSON int, expected an object"):
        read_records(path)
    path.write_text("5")
    with pytest.raises(DataFormatError, match=r"doc.json: a JSON int, expected a list of objects"):
        read_records(path)


def test_validator_messages_name_the_jsonl_line_of_records(tmp_path):
    path = tmp_path / "pool.jsonl"
    with open(path, "w") as handle:
        handle.write("\n" + json.dumps(canonical_row(0)) + "\n")
        handle.write(json.dumps(canonical_row(1, teacher_solutions=[{"teacher": "a", "text": 5}])) + "\n")
    report = validate_pool_dataset(read_records(path))
    (problem,) = report.problems("unreadable_pool")
    assert problem.message.startswith(f"{path}, line 3, row 1, column 'teacher_solutions', entry 0: 'text' must be")


def test_a_dataset_conversion_names_the_row():
    dataset = Dataset.from_list([ampo_row(0), ampo_row(1)]).map(
        lambda row, index: {"target_lst": row["target_lst"] if index == 0 else None}, with_indices=True
    )
    dataset = dataset.cast_column("reward_model", dataset.features["reward_model"])
    rows = dataset.to_list()
    rows[1]["reward_model"] = {"ground_truth": None, "style": "rule"}
    with pytest.raises(DataFormatError, match=r"row 1, column 'reward_model'"):
        to_canonical(Dataset.from_list(rows))


# ---------------------------------------------------------------------------------------------- gold checks
def test_check_golds_warns_about_golds_math_verify_cannot_parse(capsys, tmp_path):
    rows = [canonical_row(i) for i in range(3)]
    rows[1]["answer"] = "$t(0,4]$"  # an olympiad_bench gold Math-Verify reads as a string only
    rows[2]["answer"] = "$t(0,4]$"
    rows.append(canonical_row(3, answer="E_{1},E_{2}"))
    rows.append(canonical_row(4, answer="1.70e4"))
    assert validate_pool_dataset(rows).warning_counts.get("unparsable_gold") is None  # off by default
    report = validate_pool_dataset(rows, check_golds=True)
    problems = report.problems("unparsable_gold")
    assert [(p.row_index, p.field) for p in problems] == [(1, "answer"), (3, "answer")]
    assert "row 1, column 'answer' (and 1 more row(s) with this gold)" in problems[0].message
    assert report.ok  # a warning, not an error
    path = tmp_path / "golds.jsonl"
    write_jsonl(path, rows)
    assert pool_cli(["validate", str(path), "--check-answers", "--show-warnings"]) == 0
    assert "unparsable_gold: 2" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------- property-based tests
_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=12)
_NAME = st.text("abcXYZ-_.0123456789", min_size=1, max_size=8)


@st.composite
def pool_entries(draw):
    """``(entry, expected TeacherSolution or None for malformed, index-free)``."""
    kind = draw(st.sampled_from(["dict", "dict", "dict", "string", "bad_entry", "bad_text", "bad_teacher", "bad_num"]))
    if kind == "string":
        text = draw(_TEXT)
        return text, ("string", text)
    if kind == "bad_entry":
        return draw(st.sampled_from([5, 2.5, b"x", ["x"], None, True])), None
    text_key = draw(st.sampled_from(["text", "content", "solution"]))
    teacher_key = draw(st.sampled_from(["teacher", "source", "model", None]))
    text = draw(_TEXT)
    teacher = draw(st.one_of(_NAME, st.integers(0, 99)))
    length = draw(st.one_of(st.none(), st.integers(0, 10**6)))
    quality = draw(st.one_of(st.none(), st.floats(-1e6, 1e6)))
    entry = {text_key: text, "role": "assistant"}
    if teacher_key is not None:
        entry[teacher_key] = teacher
    if length is not None:
        entry["length"] = length
    if quality is not None:
        entry["quality_score"] = quality
    if kind == "bad_text":
        entry[text_key] = draw(st.sampled_from([5, b"x", ["x"], {"a": 1}, 1.5]))
        return entry, None
    if kind == "bad_teacher" and teacher_key is not None:
        entry[teacher_key] = draw(st.sampled_from([["a"], {"a": 1}, b"a", True, 1.5]))
        return entry, None
    if kind == "bad_num":
        key = draw(st.sampled_from(["length", "quality_score"]))
        entry[key] = draw(st.sampled_from(["12", float("inf"), True, [1]] + ([2.5] if key == "length" else [])))
        return entry, None
    named = str(teacher) if teacher_key is not None else None
    return entry, ("dict", text, named, length, quality)


@st.composite
def pools(draw):
    """``(pool value, expected list of TeacherSolution, or None when it must be refused)``."""
    shape = draw(st.sampled_from(["list", "list", "tuple", "json", "none", "bad_value"]))
    if shape == "none":
        return draw(st.sampled_from([None, float("nan"), "null"])), []
    if shape == "bad_value":
        return draw(st.sampled_from([5, 2.5, b"[]", "not json", "{", {"text": "x", "teacher": "a"}, True])), None
    drawn = draw(st.lists(pool_entries(), max_size=4))
    value = [entry for entry, _ in drawn]
    if shape == "tuple":
        value = tuple(value)
    elif shape == "json":
        try:
            value = json.dumps(value, allow_nan=False)
        except (TypeError, ValueError):  # bytes, NaN: not JSON; keep the list
            pass
    if any(expected is None for _, expected in drawn):
        return value, None
    solutions = []
    for index, (_, expected) in enumerate(drawn):
        if expected[0] == "string":
            solutions.append(TeacherSolution(f"teacher_{index}", expected[1]))
        else:
            _, text, named, length, quality = expected
            teacher = named if named is not None else f"teacher_{index}"
            solutions.append(TeacherSolution(teacher, text, length, None if quality is None else float(quality)))
    return value, solutions


@settings(max_examples=300, deadline=None, database=None)
@given(pools())
def test_parse_pool_converts_exactly_or_refuses_with_the_public_error(generated):
    value, expected = generated
    try:
        parsed = parse_pool(value, row_index=4, column="pool")
    except DataFormatError as error:
        assert expected is None, f"refused a well-formed pool: {error}"
        assert error.row == 4 and error.column == "pool" and error.fix
        return
    assert expected is not None, f"accepted a malformed pool: {value!r} -> {parsed!r}"
    assert parsed == expected


_GOLDS = st.one_of(
    st.tuples(st.text("0123456789x+-/ ", min_size=1, max_size=6).filter(str.strip), st.just(True)),
    st.tuples(st.integers(-1000, 1000), st.just(True)),
    st.tuples(st.sampled_from([None, "", "  ", b"7", ["x", b"y"]]), st.just(False)),
)


@st.composite
def ampo_rows(draw):
    """``(row, expected canonical row or None when it must be refused)`` in the official AMPO format."""
    gold, gold_ok = draw(_GOLDS)
    in_dict = draw(st.booleans())
    reward_model = {"ground_truth": gold, "style": "rule"} if in_dict else gold
    if in_dict and not draw(st.booleans()):
        reward_model = {"style": "rule"}  # the key is missing
        gold_ok = False
    pool, solutions = draw(pools())
    row = {"prompt": draw(_TEXT), "target_lst": pool, "reward_model": reward_model}
    if not gold_ok or solutions is None:
        return row, None
    answer = str(gold).strip()
    entries = [{"teacher": s.teacher, "text": s.text, "quality_score": s.quality_score} for s in solutions]
    return row, {"prompt": row["prompt"], "answer": answer, "teacher_solutions": entries}


@settings(max_examples=150, deadline=None, database=None)
@given(st.lists(ampo_rows(), min_size=1, max_size=4))
def test_conversion_is_exact_or_refused_naming_the_first_bad_row(generated):
    rows = [row for row, _ in generated]
    first_bad = next((index for index, (_, expected) in enumerate(generated) if expected is None), None)
    for index, row in enumerate(rows):  # row by row, as the library converts them
        expected = generated[index][1]
        try:
            converted = convert_ampo_row(row, normalize=False, counts=Counter())
        except DataFormatError:
            assert expected is None, f"refused a well-formed row: {row!r}"
            continue
        assert expected is not None, f"accepted a malformed row: {row!r} -> {converted!r}"
        assert converted == expected
    try:
        dataset = to_canonical(rows, normalize=False)
    except DataFormatError as error:
        if first_bad is None:  # every row converts; the kept reward_model column mixes types (int vs str golds)
            assert error.column == "reward_model" and error.row is not None, error
        else:
            assert error.row == first_bad, error
        return
    assert first_bad is None
    assert dataset["answer"] == [expected["answer"] for _, expected in generated]


_LINES = st.one_of(
    st.builds(lambda i: ("good", json.dumps(canonical_row(i)).encode()), st.integers(0, 9)),
    st.just(("bad", b"{not json")),
    st.just(("bad", b"[1, 2]")),
    st.just(("bad", b'{"prompt": "caf\xe9"}')),
    st.just(("blank", b"   ")),
    st.just(("late", json.dumps(canonical_row(1, answer=5)).encode())),  # Arrow: int among strings
    st.just(("late", json.dumps(canonical_row(1, teacher_solutions=[{"teacher": "a", "text": 5}])).encode())),
)


@settings(max_examples=80, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_LINES, min_size=1, max_size=6))
def test_jsonl_files_load_exactly_or_are_refused_naming_the_line(lines):
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "pool.jsonl")
        with open(path, "wb") as handle:
            handle.write(b"\n".join(line for _, line in lines) + b"\n")
        first_bad = next((number for number, (kind, _) in enumerate(lines, start=1) if kind == "bad"), None)
        goods = [kind for kind, _ in lines if kind == "good"]
        try:
            dataset = load_pool_dataset(path)
            report = validate_pool_dataset(dataset)
        except DataFormatError as error:
            assert error.file == path
            if first_bad is not None:
                assert error.line == first_bad, (error, lines)
            else:  # a type clash (Arrow) needs a good row before the odd one
                assert any(kind == "late" for kind, _ in lines)
            return
        assert first_bad is None
        rows = [json.loads(line) for kind, line in lines if kind != "blank"]
        assert (dataset.to_list() if rows else []) == rows  # loaded exactly
        if rows and len(goods) == len(rows):
            assert report.ok
