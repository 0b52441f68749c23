"""Evaluate a checkpoint with the AMPO paper's protocol, compare runs, plot pass@k curves.

    python scripts/evaluate.py run --model PATH_OR_HUB_ID --benchmarks math6 [options]   # `run` may be omitted
    python scripts/evaluate.py compare RUN_A/results.json RUN_B/results.json [--baseline LABEL] [--output FILE.md]
    python scripts/evaluate.py plot RUN_A/results.json RUN_B/results.json --output curves.png

`run` writes results.json (every number and the settings), results.md (a Table 1 row and details),
generations.jsonl (one line per sampled response) and pass_at_k.png into --output-dir. See docs/evaluation.md.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ..answers import SYSTEM_PROMPT
from ..generation import DEFAULT_MAX_NEW_TOKENS, DEFAULT_TEMPERATURE, DEFAULT_TOP_P, make_backend

COMMANDS = ("run", "compare", "plot")


def _int_list(text: str) -> list[int]:
    try:
        values = [int(item) for item in text.replace(",", " ").split()]
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected integers like '1,2,4,8', got {text!r}") from error
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"k values must be >= 1, got {text!r}")
    return values


def _scoring_overrides(items: list[str] | None) -> dict[str, str]:
    overrides = {}
    for item in items or []:
        name, separator, mode = item.partition("=")
        if not separator or mode not in ("math", "multiple_choice"):
            raise SystemExit(f"--scoring expects NAME=math or NAME=multiple_choice, got {item!r}.")
        overrides[name] = mode
    return overrides


def _renames(items: list[str] | None) -> dict[str, str]:
    renames = {}
    for item in items or []:
        data_source, separator, key = item.partition("=")
        if not separator or not data_source or not key:
            raise SystemExit(f"--map expects DATA_SOURCE=KEY, got {item!r}.")
        renames[data_source] = key
    return renames


def build_parser() -> argparse.ArgumentParser:
    from ..evaluation import BENCHMARK_DIR_ENV_VAR, BENCHMARK_FILE_ALIASES, BENCHMARKS

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command")

    run = commands.add_parser("run", help="generate, score and report (the default command)")
    run.add_argument("--model", required=True, help="checkpoint directory or hub id")
    run.add_argument("--tokenizer", default=None, help="tokenizer path/id (default: the model's)")
    run.add_argument(
        "--benchmarks",
        nargs="+",
        required=True,
        help="benchmark files (parquet/jsonl/json) or short names resolved in --benchmark-dir: "
        + ", ".join(BENCHMARK_FILE_ALIASES)
        + ", or any file stem there",
    )
    run.add_argument(
        "--benchmark-dir",
        default=None,
        help=f"folder of the benchmark files (default: ${BENCHMARK_DIR_ENV_VAR}, else ./data/benchmarks)",
    )
    run.add_argument(
        "--select", nargs="+", default=None, help="only these benchmarks, e.g. aime24 amc math500 (key or data_source)"
    )
    run.add_argument("--max-problems", type=int, default=None, help="first N problems of each benchmark (smoke tests)")
    run.add_argument("--output-dir", default=None, help="default: outputs/eval/<label>")
    run.add_argument("--label", default=None, help="name of this run in tables and plots (default: model dir name)")
    run.add_argument("--backend", choices=("auto", "vllm", "transformers"), default="auto")
    run.add_argument("-n", "--num-samples", type=int, default=1, help="samples per benchmark row (default 1)")
    run.add_argument(
        "--no-expand-repeats",
        dest="expand_repeats",
        action="store_false",
        help="sample --num-samples per distinct problem, ignoring how often a row is repeated in the file "
        "(default: a row repeated r times gets r x --num-samples samples, the avg@32 convention)",
    )
    run.add_argument("--temperature", type=float, default=DEFAULT_TEMPERATURE)
    run.add_argument("--top-p", type=float, default=DEFAULT_TOP_P)
    run.add_argument("--max-new-tokens", type=int, default=DEFAULT_MAX_NEW_TOKENS)
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--pass-k", type=_int_list, default=None, help="k values, e.g. 1,2,4,8 (default: 1,2,4,..,n)")
    prompt = run.add_mutually_exclusive_group()
    prompt.add_argument(
        "--system-prompt", default=SYSTEM_PROMPT, help="replaces stored system prompts ('' for none); default: paper's"
    )
    prompt.add_argument(
        "--keep-stored-system-prompt",
        action="store_const",
        const=None,
        dest="system_prompt",
        help="use the system prompts stored in the benchmark rows (not the paper's protocol)",
    )
    run.add_argument("--scoring", nargs="+", default=None, metavar="NAME=MODE", help="e.g. my_set=multiple_choice")
    run.add_argument(
        "--map",
        nargs="+",
        default=None,
        metavar="DATA_SOURCE=KEY",
        help="treat a data_source as a paper benchmark, e.g. ai2_arc=arc_c (keys: " + ", ".join(BENCHMARKS) + ")",
    )
    run.add_argument("--verify-timeout", type=float, default=5.0, help="seconds per Math-Verify item (then wrong)")
    run.add_argument("--no-plot", dest="plot", action="store_false")
    run.add_argument("--trust-remote-code", action="store_true")
    hf = run.add_argument_group("transformers backend")
    hf.add_argument("--batch-size", type=int, default=8, help="sequences per generate call")
    hf.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    hf.add_argument("--dtype", default="auto", help="auto (bf16 on GPU, fp32 on CPU), bfloat16, float16, float32")
    vllm = run.add_argument_group("vLLM backend")
    vllm.add_argument("--tensor-parallel-size", type=int, default=1)
    vllm.add_argument("--data-parallel-size", type=int, default=1, help="independent engines, one per GPU group")
    vllm.add_argument("--gpu-memory-utilization", type=float, default=0.9)
    vllm.add_argument("--max-model-len", type=int, default=None)

    compare = commands.add_parser("compare", help="several results side by side, with deltas vs a baseline")
    compare.add_argument("results", nargs="+", help="results.json files or run directories")
    compare.add_argument("--labels", nargs="+", default=None, help="override the runs' labels (same order)")
    compare.add_argument("--baseline", default="0", help="label or index of the baseline run (default: the first)")
    compare.add_argument("--output", default=None, help="write the Markdown here (default: print it)")
    compare.add_argument("--plot", default=None, help="also write overlaid pass@k curves to this PNG")

    plot = commands.add_parser("plot", help="pass@k curves of one or more runs, overlaid")
    plot.add_argument("results", nargs="+", help="results.json files or run directories")
    plot.add_argument("--labels", nargs="+", default=None)
    plot.add_argument("--output", required=True, help="PNG file to write")
    return parser


def _load_labelled(paths: list[str], labels: list[str] | None) -> list[dict]:
    from ..evaluation import load_results

    results_list = [load_results(path) for path in paths]
    if labels:
        if len(labels) != len(results_list):
            raise SystemExit(f"--labels got {len(labels)} names for {len(results_list)} result files.")
        for results, label in zip(results_list, labels):
            results.setdefault("model", {})["label"] = label
    return results_list


def command_run(args: argparse.Namespace) -> int:
    from .. import evaluation as ev

    settings = ev.EvalSettings(
        num_samples=args.num_samples,
        temperature=args.temperature,
        top_p=args.top_p,
        max_new_tokens=args.max_new_tokens,
        seed=args.seed,
        system_prompt=args.system_prompt,
        pass_k=args.pass_k,
        expand_repeats=args.expand_repeats,
        verify_timeout=args.verify_timeout,
    )
    benchmark_sets = ev.load_benchmarks(
        args.benchmarks,
        benchmark_dir=args.benchmark_dir,
        select=args.select,
        max_problems=args.max_problems,
        scoring=_scoring_overrides(args.scoring),
        rename=_renames(args.map),
    )
    for benchmark_set in benchmark_sets:
        summary = benchmark_set.summary()
        print(
            f"[evaluate] {summary['source']}: {summary['rows']} rows -> problems {summary['problems_evaluated']}"
            + (f"; skipped rows {summary['skipped_rows']}" if summary["skipped_rows"] else ""),
            file=sys.stderr,
        )
    model_text = str(args.model)
    if model_text.startswith(("/", "./", "../", "~")) and not Path(model_text).expanduser().exists():
        raise FileNotFoundError(f"--model {model_text!r}: no such directory (give a checkpoint directory or hub id).")
    label = args.label or Path(model_text.rstrip("/")).name
    backend = make_backend(
        args.backend,
        args.model,
        args.tokenizer,
        batch_size=args.batch_size,
        device=args.device,
        dtype=args.dtype,
        trust_remote_code=args.trust_remote_code,
        tensor_parallel_size=args.tensor_parallel_size,
        data_parallel_size=args.data_parallel_size,
        gpu_memory_utilization=args.gpu_memory_utilization,
        max_model_len=args.max_model_len,
        seed=args.seed,
    )
    output = ev.evaluate(backend, benchmark_sets, settings, label=label, model_name=args.model)
    output_dir = Path(args.output_dir or Path("outputs") / "eval" / label)
    paths = ev.write_report(output, output_dir, plot=args.plot)
    print(ev.render_table1_markdown([output.results]))
    for kind, path in paths.items():
        print(f"[evaluate] wrote {kind}: {path}", file=sys.stderr)
    return 0


def command_compare(args: argparse.Namespace) -> int:
    from .. import evaluation as ev

    results_list = _load_labelled(args.results, args.labels)
    text = ev.render_compare_markdown(results_list, baseline=args.baseline)
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(text, encoding="utf-8")
        print(f"[evaluate] wrote {args.output}", file=sys.stderr)
    else:
        print(text)
    if args.plot:
        print(f"[evaluate] wrote {ev.plot_pass_at_k(results_list, args.plot)}", file=sys.stderr)
    return 0


def command_plot(args: argparse.Namespace) -> int:
    from .. import evaluation as ev

    path = ev.plot_pass_at_k(_load_labelled(args.results, args.labels), args.output)
    print(f"[evaluate] wrote {path}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] not in COMMANDS and argv[0] not in ("-h", "--help"):
        argv = ["run", *argv]  # `run` is the default command
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return {"run": command_run, "compare": command_compare, "plot": command_plot}[args.command](args)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # `python -m ampo_trl.cli.evaluate ...`
    sys.exit(main())
