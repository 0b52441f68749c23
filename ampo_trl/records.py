"""Reading tables of rows: the one reader of ``.parquet`` / ``.jsonl`` / ``.json`` / ``.csv`` files, directories and
hub datasets, shared by the pool tools, the training data loader, the pool builder and the evaluator.

* :func:`read_records` gives a local file's rows as plain Python dicts, in a `Records` list that remembers the file
  and each row's line (JSONL), so later errors can name them. JSONL: one JSON object per line (blank lines skipped);
  JSON: a list of objects, an object holding exactly one list of objects (``{"data": [...]}``), or a pandas
  ``orient="columns"`` object. Reading with the standard library keeps per-row ``{teacher: text}`` mappings exact
  (Arrow would merge their keys across rows).
* :func:`rows_to_dataset` builds a `datasets.Dataset` from rows; a column whose values Arrow cannot hold in one
  type (``"answer": "5"`` in one line, ``"answer": 5`` in another) is named with the two rows (lines) that clash.
* :func:`load_table` gives a `datasets.Dataset` (also for directories and hub ids).
* :func:`to_python` turns numpy values (parquet, pandas) into plain Python.

Malformed input (not UTF-8, not JSON, not an object per line, mixed types) raises
`ampo_trl.errors.DataFormatError` naming the file, line or row and column, and how to fix it.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import DataFormatError

if TYPE_CHECKING:  # pragma: no cover
    from datasets import Dataset

TABLE_SUFFIXES = (".parquet", ".jsonl", ".json", ".csv")

_UTF8_FIX = "re-encode the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)."


class Records(list):
    """Rows read from a file (a plain list of dicts) that remember where they came from: ``source`` (the path) and
    ``line_numbers`` (the 1-based line of each row in a JSONL file; None for other files)."""

    def __init__(self, rows=(), source: str | None = None, line_numbers: list[int] | None = None) -> None:
        super().__init__(rows)
        self.source = source
        self.line_numbers = line_numbers


def row_place(rows: Any, row_index: int | None) -> dict[str, Any]:
    """``file`` / ``line`` / ``row`` of a row for `DataFormatError.located`: the file and line when ``rows`` is a
    `Records`, else only the row."""
    place: dict[str, Any] = {"row": row_index}
    source = getattr(rows, "source", None)
    if source is not None:
        place["file"] = source
    lines = getattr(rows, "line_numbers", None)
    if lines is not None and row_index is not None and 0 <= row_index < len(lines):
        place["line"] = lines[row_index]
    return place


def to_python(value: Any) -> Any:
    """numpy arrays / scalars (parquet, pandas) -> plain Python lists / scalars, recursively; the rest unchanged."""
    if isinstance(value, dict):
        return {key: to_python(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_python(item) for item in value]
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        return to_python(value.tolist())
    return value


def _text_lines(path: str):
    """``(line_number, text)`` of a text file; the first line that is not UTF-8 raises `DataFormatError`."""
    with open(path, "rb") as handle:
        for line_number, raw_line in enumerate(handle, start=1):
            try:
                yield line_number, raw_line.decode("utf-8")
            except UnicodeDecodeError as error:
                raise DataFormatError(
                    f"not UTF-8 text ({error.reason} at byte {error.start} of the line).",
                    file=path,
                    line=line_number,
                    fix=_UTF8_FIX,
                ) from None


def _json_lines(path: str) -> Records:
    rows, line_numbers = [], []
    for line_number, line in _text_lines(path):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise DataFormatError(
                f"not valid JSON ({error.msg} at character {error.pos}).",
                file=path,
                line=line_number,
                fix="write one JSON object per line.",
            ) from None
        if not isinstance(row, dict):
            raise DataFormatError(
                f"a JSON {type(row).__name__}, expected an object.",
                file=path,
                line=line_number,
                fix='write one JSON object per line, e.g. {"prompt": ..., "answer": ...}.',
            )
        rows.append(row)
        line_numbers.append(line_number)
    return Records(rows, source=path, line_numbers=line_numbers)


def _check_utf8_lines(path: str) -> None:
    """Raise `DataFormatError` naming the first line of a text file that is not UTF-8."""
    for _ in _text_lines(path):
        pass


def _json_document(path: str) -> Records:
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except UnicodeDecodeError:
        _check_utf8_lines(path)  # raises, naming the first line that is not UTF-8
        raise
    except json.JSONDecodeError as error:
        raise DataFormatError(
            f"not valid JSON ({error.msg}).", file=path, line=error.lineno, fix="check the JSON syntax."
        ) from None
    if isinstance(data, dict):
        lists = [value for value in data.values() if isinstance(value, list)]
        if len(lists) == 1:
            data = lists[0]
        elif data and all(isinstance(value, dict) for value in data.values()):  # pandas orient="columns"
            names = list(data)
            index = list(next(iter(data.values()), {}))
            data = [{name: data[name].get(key) for name in names} for key in index]
    if not isinstance(data, list):
        raise DataFormatError(
            f"a JSON {type(data).__name__}, expected a list of objects (or an object holding one list of objects).",
            file=path,
            fix="store the rows as a JSON list of objects, or as JSONL (one object per line).",
        )
    for row_index, row in enumerate(data):
        if not isinstance(row, dict):
            raise DataFormatError(
                f"a JSON {type(row).__name__}, expected an object.",
                file=path,
                row=row_index,
                fix="make every element of the list a JSON object.",
            )
    return Records(data, source=path)


def _parquet_table(path: str):
    """A parquet file as an Arrow table, without the pandas index columns or schema metadata."""
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    pandas_index = [name for name in table.column_names if name.startswith("__index_level_")]
    if pandas_index:
        table = table.drop(pandas_index)
    return table.replace_schema_metadata(None)


def _read_parquet(path: str):
    from datasets import Dataset

    return Dataset(_parquet_table(path))


def read_records(path: str | os.PathLike) -> Records:
    """Rows of a local ``.jsonl``, ``.json`` or ``.parquet`` file as plain Python dicts (see the module docstring)."""
    path = os.fspath(path)
    suffix = Path(path).suffix.lower()
    if suffix == ".jsonl":
        return _json_lines(path)
    if suffix == ".json":
        return _json_document(path)
    if suffix == ".parquet":
        return Records(_parquet_table(path).to_pylist(), source=path)
    raise ValueError(f"{path}: unsupported file type {suffix!r}; use .parquet, .jsonl or .json.")


def rows_to_dataset(rows: list[dict]) -> Dataset:
    """A `datasets.Dataset` with the union of all rows' keys as columns (`Dataset.from_list` looks only at the first
    row's). A column Arrow cannot hold in one type raises `DataFormatError` naming it and two clashing rows (with
    their file and lines when ``rows`` is a `Records`)."""
    import pyarrow as pa
    from datasets import Dataset

    names = list(dict.fromkeys(name for row in rows for name in row))
    columns = {name: [row.get(name) for row in rows] for name in names}
    try:
        return Dataset.from_dict(columns)
    except (pa.ArrowException, TypeError, ValueError) as error:
        raise _mixed_type_error(rows, columns, error) from None


def _shape(value: Any) -> Any:
    """A hashable summary of a value's type structure: values of equal shape never clash in Arrow."""
    if isinstance(value, dict):
        return ("dict", tuple(sorted((str(key), _shape(item)) for key, item in value.items())))
    if isinstance(value, (list, tuple)):
        return ("list", tuple(sorted({_shape(item) for item in value}, key=repr)))
    return type(value).__name__


def _mixed_type_error(rows: list[dict], columns: dict[str, list], error: Exception) -> DataFormatError:
    """The first column whose values cannot share one Arrow type, with the first two rows that clash."""
    import pyarrow as pa

    def fits(values: list) -> bool:
        try:
            pa.array(values)
        except (pa.ArrowException, TypeError, ValueError):
            return False
        return True

    for name, values in columns.items():
        if fits(values):
            continue
        present = [index for index, value in enumerate(values) if value is not None]
        first = present[0]
        checked = {_shape(values[first])}
        for index in present[1:]:
            shape = _shape(values[index])
            if shape in checked:
                continue
            if not fits([values[first], values[index]]):
                first_place = row_place(rows, first)
                where = f"line {first_place['line']}" if "line" in first_place else f"row {first}"
                return DataFormatError(
                    f"this value ({type(values[index]).__name__}: {str(values[index])[:60]!r}) does not have the type "
                    f"of the column's first value ({type(values[first]).__name__} in {where}: "
                    f"{str(values[first])[:60]!r}); Arrow stores one type per column ({error}).",
                    column=name,
                    fix="write every value of this column with the same type (e.g. all answers as strings).",
                    **row_place(rows, index),
                )
            checked.add(shape)
        return DataFormatError(
            f"Arrow cannot store the values of this column in one type ({error}).",
            column=name,
            fix="write every value of this column with the same type.",
            file=getattr(rows, "source", None),
        )
    return DataFormatError(
        f"Arrow cannot build a table from these rows ({error}).", file=getattr(rows, "source", None)
    )


def load_table(source: str | os.PathLike, split: str = "train") -> Dataset:
    """A `datasets.Dataset` from a local file (``.parquet``, ``.jsonl``, ``.json``, ``.csv``), a directory saved with
    ``save_to_disk`` or of parquet files, or a hub dataset id (``datasets.load_dataset(source, split=split)``)."""
    from datasets import Dataset, concatenate_datasets, load_dataset, load_from_disk

    path = os.fspath(source)
    if os.path.isdir(path):
        if os.path.exists(os.path.join(path, "dataset_info.json")) or os.path.exists(os.path.join(path, "state.json")):
            return load_from_disk(path)
        files = sorted(name for name in os.listdir(path) if name.endswith(".parquet"))
        if files:
            return concatenate_datasets([_read_parquet(os.path.join(path, name)) for name in files])
        raise ValueError(f"{path}: a directory, but neither a saved dataset nor parquet files.")
    if os.path.isfile(path):
        if path.endswith(".parquet"):
            return _read_parquet(path)
        if path.endswith((".jsonl", ".json")):
            return rows_to_dataset(read_records(path))
        if path.endswith(".csv"):
            _check_utf8_lines(path)  # datasets would fail with a byte offset and no line
            return Dataset.from_csv(path)
        raise ValueError(f"{path}: unsupported file type (use .parquet, .jsonl, .json or .csv).")
    if re.fullmatch(r"[\w.-]+(/[\w.-]+)?", path) and not path.endswith(TABLE_SUFFIXES):
        return load_dataset(path, split=split)
    raise FileNotFoundError(f"{path}: no such file, and not a hub dataset id.")


def column_names(dataset: Any) -> list[str] | None:
    """Column names of a `datasets.Dataset`, a pandas DataFrame, a dict of columns or a list of row dicts (the union
    of their keys); None for anything else (e.g. an iterable dataset without known features)."""
    names = getattr(dataset, "column_names", None)
    if isinstance(names, dict):  # DatasetDict: {split: columns}
        raise TypeError(f"Got a DatasetDict with splits {list(names)}; pass one split, e.g. dataset['train'].")
    if names is not None:
        return list(names)
    if hasattr(dataset, "columns") and hasattr(dataset, "iloc"):  # pandas
        return [str(name) for name in dataset.columns]
    if isinstance(dataset, dict):
        return list(dataset)
    if isinstance(dataset, (list, tuple)):
        names: dict[str, None] = {}
        for row in dataset:
            names.update(dict.fromkeys(row))
        return list(names)
    return None


def column_values(dataset: Any, column: str) -> list:
    """One column as a list, from any of the table types `column_names` accepts."""
    if isinstance(dataset, (list, tuple)):
        return [row.get(column) for row in dataset]
    if isinstance(dataset, dict):
        return list(dataset[column])
    if hasattr(dataset, "iloc"):
        return dataset[column].tolist()
    return list(dataset[column])
