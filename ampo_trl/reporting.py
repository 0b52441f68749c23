"""Small formatting helpers shared by the command-line reports, the evaluator and the demo."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from typing import Any


def mean(values: Iterable[float]) -> float | None:
    """The arithmetic mean, None for no values."""
    values = list(values)
    return sum(values) / len(values) if values else None


def format_percent(value: float | None, digits: int = 1, unit: str = "%", missing: str = "n/a") -> str:
    """``0.54 -> "54.0%"``; ``missing`` for None or NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return missing
    return f"{100 * value:.{digits}f}{unit}"


def format_duration(seconds: float) -> str:
    """``545.2 -> "9m05s"``."""
    minutes, seconds = divmod(int(round(seconds)), 60)
    return f"{minutes}m{seconds:02d}s"


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain-text table: numbers right-aligned; floats shown without decimals when integral or >= 100, with one
    decimal from 10, two below."""

    def cell(value) -> str:
        if isinstance(value, float):
            if value != value:  # NaN
                return "-"
            if value == int(value) or abs(value) >= 100:
                return f"{value:.0f}"
            return f"{value:.1f}" if abs(value) >= 10 else f"{value:.2f}"
        return "-" if value is None else str(value)

    table = [[cell(value) for value in row] for row in rows]
    widths = [max([len(str(header))] + [len(row[i]) for row in table]) for i, header in enumerate(headers)]
    numeric = [all(_looks_numeric(row[i]) for row in table) and bool(table) for i in range(len(headers))]

    def line(values):
        return "  ".join(
            value.rjust(width) if is_number else value.ljust(width)
            for value, width, is_number in zip(values, widths, numeric)
        ).rstrip()

    parts = [line([str(h) for h in headers]), line(["-" * width for width in widths])]
    parts += [line(row) for row in table]
    return "\n".join(parts)


def _looks_numeric(text: str) -> bool:
    return bool(re.fullmatch(r"-|[-+]?\d[\d,]*(\.\d+)?%?", text))
