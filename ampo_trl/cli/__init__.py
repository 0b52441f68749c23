"""The ``ampo`` command: one entry point for everything the package runs from a shell.

::

    ampo train --config demo/ampo_cpu                 # a shipped recipe name or a YAML path, plus --overrides
    ampo train-sft --config qwen2.5-7b-instruct/sft
    ampo evaluate --model PATH --benchmarks math6     # run | compare | plot
    ampo pool stats DATA.parquet                      # what `ampo-pool` does: stats | validate | convert | ...
    ampo build-pool --questions Q.jsonl --teacher name=...,model=... --output-dir pools/x
    ampo benchmark --steps 12 --rounds 2
    ampo demo [--recipe grpo_cpu] [--max_steps 50 ...]  # the CPU demo recipe that ships with the package
    ampo recipes [show NAME]                          # the shipped recipes, to start your own from

Several processes: each subcommand is also a module, so ``accelerate launch [accelerate options] -m
ampo_trl.cli.train --config ...`` (or ``-m ampo_trl.cli train ...``) runs it under accelerate / torchrun; the
checkout's ``scripts/*.py`` are thin wrappers over the same functions. The subcommand modules are imported only
when run, so ``ampo --help`` and ``ampo pool`` do not pay for torch / TRL.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Sequence

#: subcommand -> (module, function, one-line help). The function takes ``argv`` and returns an exit status or an
#: object (a trainer: status 0).
COMMANDS: dict[str, tuple[str, str, str]] = {
    "train": ("ampo_trl.cli.train", "main", "train with AMPO (or the GRPO baseline) from a recipe"),
    "train-sft": ("ampo_trl.cli.train_sft", "sft_main", "the SFT baseline on the pool's teacher solutions"),
    "evaluate": ("ampo_trl.cli.evaluate", "main", "the paper's evaluation protocol: run, compare, plot"),
    "pool": ("ampo_trl.cli.pool", "main", "inspect, validate, convert, export and build guidance pools"),
    "build-pool": ("ampo_trl.cli.build_pool", "main", "build a pool: sample and verify several teachers"),
    "benchmark": ("ampo_trl.cli.benchmark", "main", "AMPO vs GRPO cost ratios on this machine"),
    "demo": ("ampo_trl.cli.demo", "main", "the CPU demo (tiny offline model, ~9 minutes on 2 cores)"),
    "recipes": ("ampo_trl.cli.recipes", "main", "list the shipped recipes, or print one to start from"),
}


def usage() -> str:
    """The text of ``ampo --help``."""
    from .. import __version__

    width = max(len(name) for name in COMMANDS)
    lines = [
        f"usage: ampo <command> [options]        (ampo_trl {__version__})",
        "",
        "AMPO (Adaptive Multi-Guidance Policy Optimization) for Hugging Face TRL.",
        "",
        "commands:",
        *(f"  {name:<{width}}  {help_text}" for name, (_, _, help_text) in COMMANDS.items()),
        "",
        "`ampo <command> --help` shows a command's options. Several processes / machines:",
        "  accelerate launch [--config_file ...] -m ampo_trl.cli.train --config RECIPE [--option value ...]",
        "(any command: -m ampo_trl.cli.<module>, or -m ampo_trl.cli <command>). Docs: docs/index.md in the "
        "repository.",
    ]
    return "\n".join(lines)


def _command_function(name: str) -> Callable:
    module, function, _ = COMMANDS[name]
    return getattr(importlib.import_module(module), function)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ampo`` console script (and ``python -m ampo_trl.cli``). Returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0 if argv else 2
    if argv[0] in ("-V", "--version"):
        from .. import __version__

        print(f"ampo_trl {__version__}")
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"ampo: unknown command {command!r}; choose one of: {', '.join(COMMANDS)}.", file=sys.stderr)
        print(usage(), file=sys.stderr)
        return 2
    if command in ("train", "train-sft"):  # a wrong recipe name fails here, before torch and TRL are imported
        from .recipes import resolve_config_argument

        try:
            rest = resolve_config_argument(rest)
        except FileNotFoundError as error:
            print(f"ampo {command}: error: {error}", file=sys.stderr)
            return 2
    # Parsers take their program name from sys.argv[0]: `ampo train --help` says `usage: ampo train ...`.
    sys.argv = [f"ampo {command}", *rest]
    kwargs = {"prog": "ampo build-pool"} if command == "build-pool" else {}
    result = _command_function(command)(rest, **kwargs)
    return result if isinstance(result, int) else 0
