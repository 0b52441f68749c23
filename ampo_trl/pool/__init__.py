"""The multi-guidance pool: one list of verified teacher solutions per prompt, and the tools around it.

* `schema`: the canonical schema, `parse_pool` (the single reader of a pool value), `normalize_solution`;
* `validation`: `validate_pool_dataset` -> `PoolReport` (every problem with its row and field, and statistics);
* `convert`: `detect_pool_format`, `to_canonical`, `load_pool_dataset` for the official AMPO (``target_lst``),
  LUFFY (``target``) and solutions-JSONL formats;
* `sft`: `export_sft_dataset`, the pool as (question, solution) conversations;
* `questions`, `teachers`, `builder`: building a pool from questions and teacher models (`build_pool`).

Only the standard library is imported by `schema`, `validation` and `convert` at module level (``datasets`` and
``numpy`` when needed), so the trainer's import of this package stays cheap.
"""

from ..errors import DataFormatError
from .convert import (
    LUFFY_DEFAULT_TEACHER,
    POOL_FORMATS,
    apply_system_prompt,
    convert_ampo_row,
    convert_luffy_row,
    convert_solutions_row,
    detect_pool_format,
    load_pool_dataset,
    to_canonical,
)
from .schema import (
    DEFAULT_ANSWER_COLUMN,
    DEFAULT_POOL_COLUMN,
    DEFAULT_PROMPT_COLUMN,
    TeacherSolution,
    normalize_solution,
    parse_pool,
)
from .sft import export_sft_dataset
from .validation import FATAL_KINDS, WARNING_KINDS, PoolProblem, PoolReport, PoolStats, validate_pool_dataset

__all__ = [
    "DataFormatError",
    "DEFAULT_ANSWER_COLUMN",
    "DEFAULT_POOL_COLUMN",
    "DEFAULT_PROMPT_COLUMN",
    "FATAL_KINDS",
    "LUFFY_DEFAULT_TEACHER",
    "POOL_FORMATS",
    "WARNING_KINDS",
    "PoolProblem",
    "PoolReport",
    "PoolStats",
    "TeacherSolution",
    "apply_system_prompt",
    "convert_ampo_row",
    "convert_luffy_row",
    "convert_solutions_row",
    "detect_pool_format",
    "export_sft_dataset",
    "load_pool_dataset",
    "normalize_solution",
    "parse_pool",
    "to_canonical",
    "validate_pool_dataset",
]
