"""`DataFormatError`: the one public exception for malformed pool or dataset input.

Every reader of user data (`ampo_trl.records`, `ampo_trl.answers`, `ampo_trl.pool`) refuses a malformed file, row,
gold answer or pool entry with this error, never with a bare ``TypeError``, a pyarrow error or a private exception.
It is a `ValueError`, so ``except ValueError`` keeps working. Its message names the place as precisely as it is
known, then the problem, then how to fix it::

    pool.jsonl, line 4, row 3, column 'teacher_solutions', entry 1: 'text' must be a string, got int. Fix: ...

The parts are also attributes (``file``, ``line``, ``row``, ``column``, ``entry``, ``problem``, ``fix``; None when
unknown). ``row`` and ``entry`` are 0-based indices; ``line`` is the 1-based line of a JSONL file. A reader that
knows only the entry raises with ``entry=``; its callers add what they know with `DataFormatError.located`.

Only the standard library is imported here (verifier worker processes import `ampo_trl.answers`).
"""

from __future__ import annotations

from typing import Any

_PLACE_FIELDS = ("file", "line", "row", "column", "entry")


class DataFormatError(ValueError):
    """Malformed pool or dataset input. The message names file, line (JSONL), row, column and entry when known,
    the problem, and how to fix it."""

    def __init__(
        self,
        problem: str,
        *,
        file: str | None = None,
        line: int | None = None,
        row: int | None = None,
        column: str | None = None,
        entry: int | None = None,
        fix: str | None = None,
    ) -> None:
        self.problem = problem
        self.file = file
        self.line = line
        self.row = row
        self.column = column
        self.entry = entry
        self.fix = fix
        super().__init__(problem)

    @property
    def place(self) -> str:
        """Where the problem is, e.g. ``"data.jsonl, line 3, row 2, column 'answer'"`` (``""`` if unknown)."""
        parts = []
        if self.file is not None:
            parts.append(str(self.file))
        if self.line is not None:
            parts.append(f"line {self.line}")
        if self.row is not None:
            parts.append(f"row {self.row}")
        if self.column is not None:
            parts.append(f"column '{self.column}'")
        if self.entry is not None:
            parts.append(f"entry {self.entry}")
        return ", ".join(parts)

    def __str__(self) -> str:
        message = f"{self.place}: {self.problem}" if self.place else self.problem
        if self.fix:
            message += f" Fix: {self.fix}"
        return message

    def located(self, **place: Any) -> DataFormatError:
        """A copy of this error (same class) with the given place fields filled in where still unknown."""
        unknown = set(place) - set(_PLACE_FIELDS)
        if unknown:
            raise TypeError(f"located() takes only {_PLACE_FIELDS}, got {sorted(unknown)}")
        fields = {name: getattr(self, name) for name in _PLACE_FIELDS}
        for name, value in place.items():
            if fields[name] is None:
                fields[name] = value
        return type(self)(self.problem, fix=self.fix, **fields)

    def __reduce__(self):
        # Keyword-only fields: pickling (datasets.map with num_proc > 1) needs an explicit recipe.
        fields = {name: getattr(self, name) for name in _PLACE_FIELDS}
        return _rebuild, (type(self), self.problem, self.fix, fields)


def _rebuild(cls: type[DataFormatError], problem: str, fix: str | None, fields: dict) -> DataFormatError:
    return cls(problem, fix=fix, **fields)
