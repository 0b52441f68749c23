"""`ampo build-pool` / `scripts/build_pool.py`: build a multi-guidance pool from a question set and several teachers.

The pipeline is `ampo_trl.pool.builder.build_pool`; this module only parses the command line.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import Any

from ..answers import GOLD_ANSWER_COLUMNS, SYSTEM_PROMPT
from ..pool.builder import build_pool
from ..pool.questions import QUESTION_COLUMNS, load_questions
from ..pool.teachers import TeacherSpec, load_teachers_file, parse_teacher

logger = logging.getLogger(__name__)


def build_arg_parser(prog: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Build an AMPO multi-guidance pool: sample n solutions per question from each teacher, verify "
        "them, keep each teacher's shortest correct one, optionally intersect teacher compositions, write parquet.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    data = parser.add_argument_group("questions")
    data.add_argument("--questions", required=True, help="hub dataset id or local .jsonl/.json/.parquet/.csv file")
    data.add_argument("--split", default="train", help="split of a hub dataset")
    data.add_argument("--question-column", default=None, help=f"default: first of {list(QUESTION_COLUMNS)}")
    data.add_argument("--answer-column", default=None, help=f"default: first of {list(GOLD_ANSWER_COLUMNS)}")
    data.add_argument("--limit", type=int, default=None, help="use only the first N questions")

    teachers = parser.add_argument_group("teachers")
    teachers.add_argument(
        "--teacher",
        action="append",
        default=[],
        metavar="SPEC",
        help="repeatable: 'MODEL' or 'name=NAME,model=MODEL,n=8,enable_thinking=true,vllm.max_model_len=16384'",
    )
    teachers.add_argument("--teachers-file", default=None, help="YAML/JSON list of teacher mappings")
    teachers.add_argument("--n", type=int, default=8, help="samples per question per teacher (paper: 8)")
    teachers.add_argument("--temperature", type=float, default=0.6)
    teachers.add_argument("--top-p", type=float, default=0.95)
    teachers.add_argument("--top-k", type=int, default=None)
    teachers.add_argument("--max-new-tokens", type=int, default=8192, help="generation budget per sample, in tokens")
    teachers.add_argument("--seed", type=int, default=0)
    teachers.add_argument(
        "--teacher-system-prompt", default=None, help="system prompt for the teachers (default: the paper's)"
    )
    teachers.add_argument("--tensor-parallel-size", type=int, default=None, help="vLLM, for every teacher")
    teachers.add_argument("--gpu-memory-utilization", type=float, default=None, help="vLLM, for every teacher")
    teachers.add_argument("--max-model-len", type=int, default=None, help="vLLM, for every teacher")

    run = parser.add_argument_group("run")
    run.add_argument(
        "--backend", default="vllm", help="'vllm' (GPU), 'transformers' (CPU/GPU, slow) or 'module:factory'"
    )
    run.add_argument("--device", default="cpu", help="transformers backend: torch device")
    run.add_argument("--dtype", default=None, help="transformers backend: torch dtype (e.g. bfloat16)")
    run.add_argument("--output-dir", required=True, help="generations/, pool.parquet and build_summary.json go here")
    run.add_argument("--output", default=None, help="pool parquet path (default: OUTPUT_DIR/pool.parquet)")
    run.add_argument("--push-to-hub", default=None, metavar="REPO_ID", help="also push the pool to this hub dataset")
    run.add_argument("--private", action="store_true", help="with --push-to-hub: create a private dataset")
    run.add_argument(
        "--composition",
        action="append",
        default=[],
        metavar="A,B",
        help="repeatable: keep only questions with a solution from at least one teacher of every composition",
    )
    run.add_argument("--keep-unsolved", action="store_true", help="keep questions no teacher solved (empty pools)")
    run.add_argument(
        "--only", action="append", default=[], metavar="NAME", help="generate only these teachers, do not assemble"
    )
    run.add_argument("--chunk-size", type=int, default=None, help="questions per generation call (vllm 512, else 8)")
    run.add_argument("--verify-timeout", type=float, default=5.0, help="Math-Verify time limit per answer (s)")
    run.add_argument("--no-normalize", action="store_true", help="keep \\boxed{} outputs as they are")
    run.add_argument("--no-prefer-formatted", action="store_true", help="pick the shortest correct sample only")
    run.add_argument(
        "--student-system-prompt", default=SYSTEM_PROMPT, help="system message of the pool's prompts ('' for none)"
    )
    run.add_argument("--no-progress", action="store_true", help="no tqdm bars")
    return parser


def teachers_from_args(args: argparse.Namespace) -> list[TeacherSpec]:
    defaults: dict[str, Any] = {
        "n": args.n,
        "temperature": args.temperature,
        "top_p": args.top_p,
        "top_k": args.top_k,
        "max_new_tokens": args.max_new_tokens,
        "seed": args.seed,
    }
    if args.teacher_system_prompt is not None:
        defaults["system_prompt"] = args.teacher_system_prompt
    for option, key in (
        ("tensor_parallel_size", "vllm.tensor_parallel_size"),
        ("gpu_memory_utilization", "vllm.gpu_memory_utilization"),
        ("max_model_len", "vllm.max_model_len"),
    ):
        if getattr(args, option) is not None:
            defaults[key] = getattr(args, option)
    teachers = [parse_teacher(spec, defaults) for spec in args.teacher]
    if args.teachers_file:
        teachers += load_teachers_file(args.teachers_file, defaults)
    if not teachers:
        raise SystemExit("No teacher given: use --teacher SPEC (repeatable) or --teachers-file FILE.")
    return teachers


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    parser = build_arg_parser(prog)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    teachers = teachers_from_args(args)
    questions, load_counts = load_questions(
        args.questions,
        split=args.split,
        question_column=args.question_column,
        answer_column=args.answer_column,
        limit=args.limit,
    )
    print(
        f"{len(questions)} questions from {args.questions} ("
        + ", ".join(f"{key}: {value}" for key, value in sorted(load_counts.items()))
        + f"); teachers: {', '.join(t.name for t in teachers)}",
        file=sys.stderr,
    )
    backend_options: dict[str, Any] = {}
    if args.backend == "transformers":
        backend_options = {"device": args.device, "dtype": args.dtype}
    result = build_pool(
        questions,
        teachers,
        args.output_dir,
        backend=args.backend,
        backend_options=backend_options,
        compositions=[[name.strip() for name in c.split(",") if name.strip()] for c in args.composition] or None,
        keep_unsolved=args.keep_unsolved,
        only=args.only or None,
        chunk_size=args.chunk_size,
        normalize=not args.no_normalize,
        prefer_formatted=not args.no_prefer_formatted,
        student_system_prompt=args.student_system_prompt,
        verify_timeout=args.verify_timeout,
        output_path=args.output,
        push_to_hub=args.push_to_hub,
        private=args.private,
        progress=not args.no_progress,
    )
    print(result.table())
    if result.dataset is None:
        print(f"Generated for {', '.join(args.only)} only; rerun without --only to assemble the pool.")
        return 0
    counts = result.counts
    print(
        f"\nPool: {counts['pool_rows']} of {counts['questions']} questions kept "
        f"({counts['unsolved_by_all']} solved by no teacher, {counts['dropped_by_intersection']} dropped by the "
        f"composition intersection, {counts['dropped_unsolved']} unsolved dropped)."
    )
    print(result.report.summary())
    if result.output_path:
        print(f"Wrote {result.output_path}")
    if args.push_to_hub:
        print(f"Pushed to https://huggingface.co/datasets/{args.push_to_hub}")
    return 0


if __name__ == "__main__":  # `python -m ampo_trl.cli.build_pool ...`
    sys.exit(main())
