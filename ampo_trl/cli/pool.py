"""``ampo-pool``: inspect, check, convert, export and build guidance pools from the command line.

Run as ``ampo-pool <command>`` (console script) or ``python -m ampo_trl.cli.pool <command>``:

* ``stats DATASET``: counts per teacher, pool-size histogram, length percentiles (characters, and tokens with
  ``--tokenizer``), format problems; ``--png FILE`` also draws the histograms, ``--json`` prints the numbers;
* ``validate DATASET``: the problems `ampo_trl.pool.validate_pool_dataset` finds; exit status 1 on fatal ones;
* ``convert DATASET OUTPUT.parquet``: official AMPO / LUFFY / solutions-JSONL data -> the canonical schema;
* ``export-sft DATASET OUTPUT.parquet``: (question, solution) pairs in TRL's conversational SFT format;
* ``build ...``: `ampo_trl.pool.builder` (same options as ``scripts/build_pool.py``).

``DATASET`` is a local ``.parquet`` / ``.jsonl`` / ``.json`` / ``.csv`` file, a ``save_to_disk`` directory or a hub
dataset id; recognised non-canonical formats are converted on the fly (`ampo_trl.pool.load_pool_dataset`).

Malformed input (`ampo_trl.errors.DataFormatError`: not UTF-8, not JSON, mixed types in a column, a row that cannot
be converted) is reported on stderr as one message naming the file, line or row, column and the fix; exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from ..answers import SYSTEM_PROMPT
from ..errors import DataFormatError
from ..pool import (
    DEFAULT_ANSWER_COLUMN,
    DEFAULT_POOL_COLUMN,
    DEFAULT_PROMPT_COLUMN,
    PoolReport,
    detect_pool_format,
    export_sft_dataset,
    to_canonical,
    validate_pool_dataset,
)
from ..records import column_values, load_table, read_records, rows_to_dataset
from ..reporting import format_table


def _add_dataset_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", help="local .parquet/.jsonl/.json/.csv file, save_to_disk directory or hub id")
    parser.add_argument("--split", default="train", help="split of a hub dataset")
    parser.add_argument("--pool-column", default=DEFAULT_POOL_COLUMN)
    parser.add_argument("--answer-column", default=DEFAULT_ANSWER_COLUMN)
    parser.add_argument("--prompt-column", default=DEFAULT_PROMPT_COLUMN)


def _load(args):
    """The dataset (read once) converted to the canonical columns when it is in another known format, and the
    format it was found in."""
    if args.dataset.endswith((".jsonl", ".json")):
        raw = read_records(args.dataset)
        names = list(dict.fromkeys(name for row in raw for name in row))
    else:
        raw = load_table(args.dataset, split=args.split)
        names = raw.column_names
    source_format = detect_pool_format(names, args.pool_column)
    if source_format not in (None, "canonical"):
        dataset = to_canonical(
            raw,
            source_format,
            pool_column=args.pool_column,
            answer_column=args.answer_column,
            prompt_column=args.prompt_column,
        )
    elif isinstance(raw, list):
        rows_to_dataset(raw)  # what training will build: a column Arrow cannot type is an error naming its lines
        dataset = raw  # rows keep their file and lines for the report
    else:
        dataset = raw
    return dataset, source_format


def _validate(args, dataset) -> PoolReport:
    tokenizer = None
    if getattr(args, "tokenizer", None):
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    return validate_pool_dataset(
        dataset,
        pool_column=args.pool_column,
        answer_column=args.answer_column,
        prompt_column=args.prompt_column,
        tokenizer=tokenizer,
        max_teacher_length=getattr(args, "max_teacher_length", None),
        check_answers=getattr(args, "check_answers", False),
        check_golds=getattr(args, "check_golds", False) or getattr(args, "check_answers", False),
    )


def stats_text(report: PoolReport, title: str) -> str:
    """The tables printed by ``ampo-pool stats``."""
    stats = report.stats
    parts = [f"{title}: {stats.rows} rows, {stats.solutions} solutions"]
    if stats.per_teacher:
        has_tokens = stats.token_length_percentiles is not None
        headers = ["teacher", "solutions", "rows %", "chars p50", "chars p90", "chars max"]
        if has_tokens:
            headers += ["tokens p50", "tokens p90", "tokens max"]
        rows = []
        for name, count in stats.teacher_counts.items():
            info = stats.per_teacher[name]
            row = [name, count, f"{100 * count / stats.rows:.1f}%" if stats.rows else "-"]
            row += [info.get("chars_p50"), info.get("chars_p90"), info.get("chars_max")]
            if has_tokens:
                row += [info.get("tokens_p50"), info.get("tokens_p90"), info.get("tokens_max")]
            rows.append(row)
        parts += ["", format_table(headers, rows)]
    if stats.pool_size_histogram:
        width = max(stats.pool_size_histogram.values())
        rows = [
            [size, count, f"{100 * count / stats.rows:.1f}%", "#" * max(1, round(30 * count / width)) if count else ""]
            for size, count in sorted(stats.pool_size_histogram.items())
        ]
        parts += ["", format_table(["pool size", "rows", "share", ""], rows)]
    percentile_rows = []
    for unit, values in (("chars", stats.char_length_percentiles), ("tokens", stats.token_length_percentiles)):
        if values:
            percentile_rows.append(
                [unit] + [values[key] for key in ("min", "p10", "p25", "p50", "p75", "p90", "p99", "max", "mean")]
            )
    if percentile_rows:
        headers = ["length", "min", "p10", "p25", "p50", "p75", "p90", "p99", "max", "mean"]
        parts += ["", format_table(headers, percentile_rows)]
    problem_rows = [[kind, "error", count] for kind, count in sorted(report.error_counts.items())]
    problem_rows += [[kind, "warning", count] for kind, count in sorted(report.warning_counts.items())]
    parts.append("")
    if problem_rows:
        parts.append(format_table(["problem", "severity", "count"], problem_rows))
    else:
        parts.append("No format problems.")
    return "\n".join(parts)


def save_histogram_png(report: PoolReport, dataset: Any, pool_column: str, path: str) -> None:
    """Two panels: pool-size histogram and per-teacher solution-length (characters) histograms."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..pool import parse_pool

    lengths: dict[str, list[int]] = {}
    for pool in column_values(dataset, pool_column):
        try:
            solutions = parse_pool(pool)
        except ValueError:
            continue
        for solution in solutions:
            if solution.text.strip():
                lengths.setdefault(solution.teacher, []).append(len(solution.text))
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    sizes = sorted(report.stats.pool_size_histogram.items())
    left.bar([str(size) for size, _ in sizes], [count for _, count in sizes], color="tab:blue")
    left.set_xlabel("solutions in the pool")
    left.set_ylabel("rows")
    left.set_title("Pool sizes")
    every = [value for values in lengths.values() for value in values]
    bins = 40 if not every else [min(every) + (max(every) - min(every) + 1) * i / 40 for i in range(41)]
    for teacher, values in sorted(lengths.items()):
        right.hist(values, bins=bins, histtype="step", linewidth=1.5, label=f"{teacher} ({len(values)})")
    right.set_xlabel("solution length (characters)")
    right.set_ylabel("solutions")
    right.set_title("Solution lengths per teacher")
    if lengths:
        right.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def cmd_stats(args: argparse.Namespace) -> int:
    dataset, source_format = _load(args)
    report = _validate(args, dataset)
    if args.json:
        print(
            json.dumps(
                {
                    "stats": report.stats.to_dict(),
                    "errors": dict(report.error_counts),
                    "warnings": dict(report.warning_counts),
                },
                indent=2,
            )
        )
    else:
        converted = (
            f", converted from the '{source_format}' format" if source_format not in (None, "canonical") else ""
        )
        print(stats_text(report, f"{args.dataset}{converted}"))
    if args.png:
        save_histogram_png(report, dataset, args.pool_column, args.png)
        print(f"\nWrote {args.png}")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    dataset, _ = _load(args)
    report = _validate(args, dataset)
    print(report.summary())
    shown = 0
    for problem in report.errors + (report.warnings if args.show_warnings else []):
        if shown >= args.max_listed:
            break
        print(f"  - {problem.message}")
        shown += 1
    return 0 if report.ok else 1


def cmd_convert(args: argparse.Namespace) -> int:
    dataset = load_table(args.dataset, split=args.split) if not args.dataset.endswith((".jsonl", ".json")) else None
    system_prompt = SYSTEM_PROMPT if args.paper_system_prompt else args.system_prompt
    kwargs = dict(
        source_format=args.format,
        pool_column=args.pool_column,
        answer_column=args.answer_column,
        prompt_column=args.prompt_column,
        teacher_name=args.teacher_name,
        system_prompt=system_prompt,
        normalize=False if args.no_normalize else None,
        keep_source_columns=args.keep_source_columns,
        return_counts=True,
    )
    if dataset is None:
        dataset = read_records(args.dataset)
    converted, counts = to_canonical(dataset, **kwargs)
    converted.to_parquet(args.output)
    details = ", ".join(f"{key}: {value}" for key, value in sorted(counts.items()))
    print(f"Converted {counts['rows']} rows -> {args.output} ({details})")
    report = validate_pool_dataset(converted, args.pool_column, args.answer_column, args.prompt_column)
    print(report.summary())
    return 0 if report.ok else 1


def cmd_export_sft(args: argparse.Namespace) -> int:
    dataset, _ = _load(args)
    system_prompt = SYSTEM_PROMPT if args.paper_system_prompt else args.system_prompt
    sft, counts = export_sft_dataset(
        dataset,
        system_prompt=system_prompt,
        pool_column=args.pool_column,
        prompt_column=args.prompt_column,
        teacher_column=None if args.no_teacher_column else "teacher",
        keep_columns=args.keep_column,
        return_counts=True,
    )
    sft.to_parquet(args.output)
    print(
        f"Wrote {counts['pairs']} (question, solution) pairs from {counts['rows']} rows to {args.output} "
        f"({counts['rows_without_solutions']} rows without solutions, {counts['empty_text_skipped']} empty texts "
        "skipped)."
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ampo-pool",
        description="Inspect, check, convert, export and build AMPO guidance pools (docs/data.md).",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    stats = commands.add_parser("stats", help="per-teacher counts, pool sizes, lengths, format problems")
    _add_dataset_arguments(stats)
    stats.add_argument("--tokenizer", default=None, help="also count tokens with this tokenizer (path or hub id)")
    stats.add_argument(
        "--max-teacher-length",
        type=int,
        default=None,
        help="with --tokenizer: report solutions longer than this many tokens (EOS included), which the trainer skips",
    )
    stats.add_argument("--png", default=None, help="write pool-size and length histograms to this PNG")
    stats.add_argument("--json", action="store_true", help="print the statistics as JSON")
    stats.set_defaults(func=cmd_stats)

    validate = commands.add_parser("validate", help="list format problems; exit 1 on fatal ones")
    _add_dataset_arguments(validate)
    validate.add_argument("--tokenizer", default=None)
    validate.add_argument("--max-teacher-length", type=int, default=None)
    validate.add_argument(
        "--check-answers",
        action="store_true",
        help="verify every solution against the answer (implies --check-golds)",
    )
    validate.add_argument(
        "--check-golds",
        action="store_true",
        help="warn about gold answers Math-Verify cannot parse (one parse per distinct gold)",
    )
    validate.add_argument("--show-warnings", action="store_true", help="list warnings too, not only errors")
    validate.add_argument("--max-listed", type=int, default=50)
    validate.set_defaults(func=cmd_validate)

    for name, function, help_text in (
        ("convert", cmd_convert, "official AMPO / LUFFY / solutions JSONL -> canonical parquet"),
        ("export-sft", cmd_export_sft, "(question, solution) pairs in TRL's conversational SFT format"),
    ):
        sub = commands.add_parser(name, help=help_text)
        _add_dataset_arguments(sub)
        sub.add_argument("output", help="output .parquet file")
        sub.add_argument("--system-prompt", default=None, help="replace system messages ('' removes them)")
        sub.add_argument("--paper-system-prompt", action="store_true", help="use the paper's system prompt")
        sub.set_defaults(func=function)
        if name == "convert":
            sub.add_argument("--format", default=None, choices=["ampo", "luffy", "solutions_jsonl", "canonical"])
            sub.add_argument("--teacher-name", default="DeepSeek-R1", help="teacher of LUFFY targets")
            sub.add_argument("--no-normalize", action="store_true", help="keep \\boxed{} texts as they are")
            sub.add_argument("--keep-source-columns", action="store_true", help="keep target_lst / target / solutions")
        else:
            sub.add_argument("--no-teacher-column", action="store_true")
            sub.add_argument("--keep-column", action="append", default=[], help="copy this column (repeatable)")

    commands.add_parser(
        "build", help="build a pool with teacher models (see scripts/build_pool.py --help)", add_help=False
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "build":
        from .build_pool import main as build_main

        return build_main(argv[1:], prog="ampo-pool build")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except DataFormatError as error:
        print(f"ampo-pool {args.command}: malformed input: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
