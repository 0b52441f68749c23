"""Reading tables of rows: the one reader of ``.parquet`` / ``.jsonl`` / ``.json`` / ``.csv`` files, directories and
hub datasets, shared by the pool tools, the training data loader, the pool builder and the evaluator.

* :func:`read_records` gives a local file's rows as plain Python dicts. JSONL: one JSON object per line (blank lines
  skipped); JSON: a list of objects, an object holding exactly one list of objects (``{"data": [...]}``), or a pandas
  ``orient="columns"`` object. Errors name the file and the line (JSONL) or the reason. Reading with the standard
  library keeps per-row ``{teacher: text}`` mappings exact (Arrow would merge their keys across rows).
* :func:`load_table` gives a `datasets.Dataset` (also for directories and hub ids).
* :func:`to_python` turns numpy values (parquet, pandas) into plain Python.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from datasets import Dataset

TABLE_SUFFIXES = (".parquet", ".jsonl", ".json", ".csv")


def to_python(value: Any) -> Any:
    """numpy arrays / scalars (parquet, pandas) -> plain Python lists / scalars, recursively; the rest unchanged."""
    if isinstance(value, dict):
        return {key: to_python(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_python(item) for item in value]
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        return to_python(value.tolist())
    return value


def _json_lines(path: str) -> list[dict]:
    rows = []
    with open(path, "rb") as handle:
        for line_number, raw_line in enumerate(handle, start=1):
            try:
                line = raw_line.decode("utf-8")
            except UnicodeDecodeError as error:
                raise ValueError(
                    f"{path}, line {line_number}: not UTF-8 text ({error.reason} at byte {error.start} of the line); "
                    "re-encode the file as UTF-8."
                ) from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}, line {line_number}: not valid JSON ({error.msg}).") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path}, line {line_number}: a JSON {type(row).__name__}, expected an object.")
            rows.append(row)
    return rows


def _json_document(path: str) -> list[dict]:
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except UnicodeDecodeError as error:
        raise ValueError(
            f"{path}: not UTF-8 text ({error.reason} at byte {error.start}); re-encode it as UTF-8."
        ) from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}, line {error.lineno}: not valid JSON ({error.msg}).") from None
    if isinstance(data, dict):
        lists = [value for value in data.values() if isinstance(value, list)]
        if len(lists) == 1:
            data = lists[0]
        elif data and all(isinstance(value, dict) for value in data.values()):  # pandas orient="columns"
            names = list(data)
            index = list(next(iter(data.values()), {}))
            data = [{name: data[name].get(key) for name in names} for key in index]
    if not isinstance(data, list) or not all(isinstance(row, dict) for row in data):
        raise ValueError(f"{path}: expected a JSON list of objects (or an object holding one list of objects).")
    return data


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


def read_records(path: str | os.PathLike) -> list[dict]:
    """Rows of a local ``.jsonl``, ``.json`` or ``.parquet`` file as plain Python dicts (see the module docstring)."""
    path = os.fspath(path)
    suffix = Path(path).suffix.lower()
    if suffix == ".jsonl":
        return _json_lines(path)
    if suffix == ".json":
        return _json_document(path)
    if suffix == ".parquet":
        return _parquet_table(path).to_pylist()
    raise ValueError(f"{path}: unsupported file type {suffix!r}; use .parquet, .jsonl or .json.")


def rows_to_dataset(rows: list[dict]) -> Dataset:
    """`Dataset.from_list` looks only at the first row's keys; this takes the union of all rows' keys."""
    from datasets import Dataset

    names = list(dict.fromkeys(name for row in rows for name in row))
    return Dataset.from_dict({name: [row.get(name) for row in rows] for name in names})


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
