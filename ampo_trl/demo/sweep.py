"""`scripts/demo_sweep.py`: a grid of CPU-demo recipes x seeds, run in parallel, resumable, then a report.

A **sweep spec** (YAML, one per table: ``recipes/demo/sweeps/*.yml``) names the runs and the seeds::

    table: main                       # report files: <output_dir>/<table>.md, <table>_final.png, ...
    title: AMPO against its baselines
    seeds: [0, 1, 2, 3, 4]
    baseline: GRPO                    # paired per-seed differences are taken against this run
    overrides: [--demo_eval_steps, "50"]     # appended to every run's command (optional)
    pass_at_k: [AMPO, GRPO]           # runs drawn in the pass@k plot (optional; default: all)
    runs:
      - {name: AMPO, recipe: recipes/demo/ampo_cpu.yaml}
      - {name: GRPO, recipe: recipes/demo/grpo_cpu.yaml}
      - {name: trigger always, recipe: recipes/demo/ampo_cpu.yaml, overrides: [--guidance_trigger, always]}

**Each run is the ordinary train script**, exactly what a user runs::

    accelerate launch --config_file accelerate_configs/single.yaml scripts/train.py --config R \\
        --demo_seed S --seed S --output_dir D [spec overrides] [run overrides] [--extra overrides]

so the seed changes the split, the warm-up and the RL sampling together, and every method of seed S starts from the
same cached warm-up (the warm-up is keyed by its settings, which the recipes share). Before the runs start, the
distinct warm-ups are built (in parallel), so that runs of one seed do not all build the same student at once.

**Where results go**: ``D = <output_dir>/<run id>/seed-<S>``, where the run id is the recipe's name plus its
overrides: a run with the same recipe and overrides is the same directory in every table (the main table's AMPO runs
are the ablation tables' reference), and a smoke test with ``--extra "--max_steps 5"`` never mixes with full runs.
A run is finished when ``D/demo_summary.json`` (its result file, written last and atomically) exists; finished runs
are skipped, so an interrupted sweep resumes where it stopped (an unfinished run restarts from scratch). Each run's
output goes to ``D/train.log``; ``D/sweep_command.json`` records its command, the recipe's hash and the code version
(``git describe``): a result whose recipe changed since is reported as stale, results from another code version are
announced, and the report lists the code versions its runs came from.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import re
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..reporting import format_duration, format_percent
from .run import SUMMARY_FILE

COMMAND_FILE = "sweep_command.json"
LOG_FILE = "train.log"
ACCELERATE_CONFIG = "accelerate_configs/single.yaml"
TRAIN_SCRIPT = "scripts/train.py"
SPEC_KEYS = {"table", "title", "seeds", "baseline", "overrides", "pass_at_k", "runs", "notes"}
RUN_KEYS = {"name", "recipe", "overrides"}


# ----------------------------------------------------------------------------------------------------------
# Specs and runs
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunSpec:
    """One line of a table: a recipe and its overrides, run once per seed."""

    name: str
    recipe: str
    overrides: tuple[str, ...] = ()


@dataclass
class SweepSpec:
    """A table: its runs, seeds and baseline (see the module docstring)."""

    table: str
    runs: list[RunSpec]
    seeds: list[int]
    baseline: str | None = None
    title: str = ""
    notes: str = ""
    pass_at_k: list[str] | None = None
    path: str | None = None

    def run(self, name: str) -> RunSpec:
        return next(run for run in self.runs if run.name == name)


def _string_list(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(shlex.split(value))
    if not isinstance(value, list):
        raise ValueError(f"{where}: expected a list of command-line words such as [--max_steps, '300'].")
    return tuple(str(item) for item in value)


def parse_spec(data: dict, path: str | None = None) -> SweepSpec:
    """Validate a spec mapping; errors name the spec file and the key to fix."""
    where = path or "sweep spec"
    if not isinstance(data, dict):
        raise ValueError(f"{where}: a sweep spec is a YAML mapping with table, seeds and runs.")
    unknown = sorted(set(data) - SPEC_KEYS)
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown}; allowed: {sorted(SPEC_KEYS)}.")
    for key in ("table", "seeds", "runs"):
        if not data.get(key):
            raise ValueError(f"{where}: '{key}' is required.")
    if not re.fullmatch(r"[\w.-]+", str(data["table"])):
        raise ValueError(f"{where}: table {data['table']!r} names report files; use letters, digits, '_', '-', '.'.")
    seeds = data["seeds"]
    if (
        not isinstance(seeds, list)
        or not all(isinstance(seed, int) for seed in seeds)
        or len(set(seeds)) != len(seeds)
    ):
        raise ValueError(f"{where}: seeds must be a list of distinct integers, got {seeds!r}.")
    common = _string_list(data.get("overrides"), f"{where}: overrides")
    runs = []
    for index, entry in enumerate(data["runs"]):
        if not isinstance(entry, dict) or set(entry) - RUN_KEYS or not entry.get("name") or not entry.get("recipe"):
            raise ValueError(f"{where}: runs[{index}] must be a mapping with name, recipe and optional overrides.")
        overrides = common + _string_list(entry.get("overrides"), f"{where}: runs[{index}].overrides")
        runs.append(RunSpec(str(entry["name"]), str(entry["recipe"]), overrides))
    names = [run.name for run in runs]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"{where}: run names must be unique, repeated: {duplicates}.")
    if data.get("baseline") is not None and data["baseline"] not in names:
        raise ValueError(f"{where}: baseline {data['baseline']!r} is not one of the runs {names}.")
    pass_at_k = data.get("pass_at_k")
    if pass_at_k is not None and (not isinstance(pass_at_k, list) or set(pass_at_k) - set(names)):
        raise ValueError(f"{where}: pass_at_k must list run names among {names}, got {pass_at_k!r}.")
    return SweepSpec(
        table=str(data["table"]),
        runs=runs,
        seeds=list(seeds),
        baseline=data.get("baseline"),
        title=str(data.get("title") or data["table"]),
        notes=str(data.get("notes") or "").strip(),
        pass_at_k=pass_at_k,
        path=path,
    )


def load_spec(path: str | os.PathLike) -> SweepSpec:
    with open(path, encoding="utf-8") as handle:
        return parse_spec(yaml.safe_load(handle), str(path))


@dataclass(frozen=True)
class PlannedRun:
    """One (run, seed) of a sweep: where it writes and the train-script arguments it runs with."""

    name: str
    recipe: str
    overrides: tuple[str, ...]
    seed: int
    directory: Path

    @property
    def summary_path(self) -> Path:
        return self.directory / SUMMARY_FILE

    @property
    def finished(self) -> bool:
        return self.summary_path.is_file()

    def train_args(self) -> list[str]:
        """Arguments of ``scripts/train.py``: the recipe, the seed (split, warm-up and RL), the output directory,
        then the overrides (last, so they win)."""
        seed = str(self.seed)
        return [
            "--config", self.recipe, "--demo_seed", seed, "--seed", seed, "--output_dir", str(self.directory),
            *self.overrides,
        ]  # fmt: skip

    def label(self) -> str:
        return f"{self.name} seed {self.seed}"


def run_id(recipe: str, overrides: Sequence[str]) -> str:
    """Directory name of a recipe + overrides: readable, and the same in every table that runs them."""
    stem = Path(recipe).stem
    if not overrides:
        return stem
    words = " ".join(overrides).replace("--", "")
    slug = re.sub(r"[^\w.=-]+", "_", words).strip("_")
    digest = hashlib.sha256("\0".join([recipe, *overrides]).encode()).hexdigest()[:8]
    return f"{stem}__{slug[:80]}__{digest}"


def plan_runs(
    spec: SweepSpec, output_dir: str | os.PathLike, seeds: Sequence[int] | None = None, extra: Sequence[str] = ()
) -> list[PlannedRun]:
    """Every (run, seed) of ``spec``, seed-major (the first seeds complete first, so partial sweeps pair up)."""
    planned = []
    for seed in seeds if seeds is not None else spec.seeds:
        for run in spec.runs:
            overrides = tuple(run.overrides) + tuple(extra)
            directory = Path(output_dir) / run_id(run.recipe, overrides) / f"seed-{seed}"
            planned.append(PlannedRun(run.name, run.recipe, overrides, seed, directory))
    return planned


def launch_command(run: PlannedRun, launcher: str = "accelerate") -> list[str]:
    """The command of one run: ``accelerate launch --config_file accelerate_configs/single.yaml scripts/train.py``
    with the run's arguments (``launcher="python"``: ``python scripts/train.py ...``, the same run without
    accelerate's launcher)."""
    if launcher == "accelerate":
        prefix = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", ACCELERATE_CONFIG]
    elif launcher == "python":
        prefix = [sys.executable]
    else:
        raise ValueError(f"launcher must be 'accelerate' or 'python', got {launcher!r}.")
    return [*prefix, TRAIN_SCRIPT, *run.train_args()]


def recipe_hash(repo: Path, recipe: str) -> str:
    return hashlib.sha256((repo / recipe).read_bytes()).hexdigest()[:16]


def stale_runs(runs: Sequence[PlannedRun], repo: Path) -> list[PlannedRun]:
    """Finished runs whose recipe changed since they ran (their ``sweep_command.json`` records the hash)."""
    stale = []
    for run in runs:
        record = run.directory / COMMAND_FILE
        if run.finished and record.is_file():
            recorded = json.loads(record.read_text()).get("recipe_sha256")
            if recorded and recorded != recipe_hash(repo, run.recipe):
                stale.append(run)
    return stale


def code_version(repo: Path) -> str | None:
    """``git describe --always --dirty`` of the checkout (None outside git): which trainer produced a result."""
    try:
        done = subprocess.run(
            ["git", "describe", "--always", "--dirty"], cwd=repo, capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return (done.stdout.strip() or None) if done.returncode == 0 else None


def recorded_versions(runs: Sequence[PlannedRun]) -> dict[str, list[PlannedRun]]:
    """The finished runs grouped by the code version their ``sweep_command.json`` recorded ("unknown" if none)."""
    versions: dict[str, list[PlannedRun]] = {}
    for run in runs:
        record = run.directory / COMMAND_FILE
        if run.finished:
            version = json.loads(record.read_text()).get("code_version") if record.is_file() else None
            versions.setdefault(version or "unknown", []).append(run)
    return versions


def find_repo(start: str | os.PathLike | None = None) -> Path:
    """The checkout holding ``scripts/train.py`` and the recipes: ``start``, the working directory, or the one this
    package was imported from."""
    candidates = [Path(start)] if start else [Path.cwd(), Path(__file__).resolve().parents[2]]
    for candidate in candidates:
        if (candidate / TRAIN_SCRIPT).is_file():
            return candidate.resolve()
    raise FileNotFoundError(
        f"No {TRAIN_SCRIPT} under {[str(c) for c in candidates]}: run the sweep from a checkout of ampo_trl "
        "(or pass --repo)."
    )


# ----------------------------------------------------------------------------------------------------------
# Warm-ups
# ----------------------------------------------------------------------------------------------------------


def warmup_for(run: PlannedRun):
    """The `WarmupSettings` the run will use, from the train script's own parser (nothing is loaded)."""
    from ..cli.arguments import parse_args
    from .run import warmup_settings

    script_args = parse_args(run.train_args())[0]
    return warmup_settings(script_args)


def _build_warmup(settings) -> tuple[str, bool]:
    import torch

    from .warmup import warmed_up_model_path

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the runs (torch_num_threads: 1): one core per job
    try:
        path, cached = warmed_up_model_path(settings)
    finally:
        torch.set_num_threads(threads)
    return str(path), cached


def build_warmups(
    runs: Sequence[PlannedRun], jobs: int, log: Callable[[str], None] = print
) -> dict[str, list[PlannedRun]]:
    """Build the distinct warm-ups of ``runs`` (in ``jobs`` processes) before the runs start. Returns the runs of
    each warm-up key (see `warmup_mismatches`)."""
    from .warmup import is_cached, warmup_path

    settings_by_key: dict[str, Any] = {}
    runs_by_key: dict[str, list[PlannedRun]] = {}
    for run in runs:
        settings = warmup_for(run)
        settings_by_key.setdefault(settings.key(), settings)
        runs_by_key.setdefault(settings.key(), []).append(run)
    missing = [settings for settings in settings_by_key.values() if not is_cached(warmup_path(settings))]
    if missing:
        seeds = sorted(settings.seed for settings in missing)
        workers = max(1, min(jobs, len(missing)))
        log(f"[sweep] building {len(missing)} warm-up(s) (seeds {seeds}) in {workers} process(es)")
        if workers == 1:  # no process to spawn (and no second torch import) for a single warm-up
            paths = [_build_warmup(settings)[0] for settings in missing]
        else:
            import multiprocessing

            context = multiprocessing.get_context("spawn")
            with concurrent.futures.ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
                paths = [path for path, _ in pool.map(_build_warmup, missing)]
        for path in paths:
            log(f"[sweep] warm-up ready: {path}")
    return runs_by_key


def warmup_mismatches(runs_by_key: dict[str, list[PlannedRun]]) -> dict[int, list[str]]:
    """Seeds whose runs would start from different warm-ups (``{seed: [run labels]}``): the comparison is paired by
    seed, so every method of one seed must start from the same student."""
    keys_per_seed: dict[int, set[str]] = {}
    for key, runs in runs_by_key.items():
        for run in runs:
            keys_per_seed.setdefault(run.seed, set()).add(key)
    return {
        seed: sorted(run.label() for runs in runs_by_key.values() for run in runs if run.seed == seed)
        for seed, keys in sorted(keys_per_seed.items())
        if len(keys) > 1
    }


# ----------------------------------------------------------------------------------------------------------
# Running
# ----------------------------------------------------------------------------------------------------------


@dataclass
class RunOutcome:
    run: PlannedRun
    returncode: int
    seconds: float
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and self.run.finished


Runner = Callable[[PlannedRun], int]


@dataclass
class SubprocessRunner:
    """Runs one planned run as a child process in ``repo``, its output in ``train.log``; ``terminate_all`` stops the
    children it started (on Ctrl-C)."""

    repo: Path
    launcher: str = "accelerate"
    env: dict[str, str] = field(default_factory=dict)
    _children: set = field(default_factory=set, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __call__(self, run: PlannedRun) -> int:
        command = launch_command(run, self.launcher)
        env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", **self.env}
        with open(run.directory / LOG_FILE, "w", encoding="utf-8") as log:
            log.write("$ " + shlex.join(command) + "\n")
            log.flush()
            child = subprocess.Popen(command, cwd=self.repo, env=env, stdout=log, stderr=subprocess.STDOUT)
            with self._lock:
                self._children.add(child)
            try:
                return child.wait()
            finally:
                with self._lock:
                    self._children.discard(child)

    def terminate_all(self) -> None:
        with self._lock:
            children = list(self._children)
        for child in children:
            child.terminate()


def run_all(
    runs: Sequence[PlannedRun],
    runner: Runner,
    jobs: int,
    repo: Path,
    command: Callable[[PlannedRun], list[str]] | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> list[RunOutcome]:
    """Run the unfinished ``runs`` with ``jobs`` at a time (threads waiting on ``runner``), with a progress bar.
    A failed run is reported and the others go on."""
    from tqdm.auto import tqdm

    todo = [run for run in runs if not run.finished]
    outcomes: list[RunOutcome] = []
    if not todo:
        return outcomes
    bar = tqdm(total=len(todo), unit="run", desc="sweep", disable=not progress, dynamic_ncols=True)
    write = log or bar.write
    running: set[str] = set()
    lock = threading.Lock()
    version = code_version(repo)

    def one(run: PlannedRun) -> RunOutcome:
        run.directory.mkdir(parents=True, exist_ok=True)
        record = {
            "command": command(run) if command else run.train_args(),
            "recipe_sha256": recipe_hash(repo, run.recipe),
            "code_version": version,
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        (run.directory / COMMAND_FILE).write_text(json.dumps(record, indent=2))
        with lock:
            running.add(run.label())
            bar.set_postfix_str("running: " + ", ".join(sorted(running)))
        started = time.time()
        try:
            code = runner(run)
            error = ""
        except Exception as exc:  # noqa: BLE001 - one broken run must not stop the sweep
            code, error = -1, f"{type(exc).__name__}: {exc}"
        outcome = RunOutcome(run, code, time.time() - started, error)
        with lock:
            running.discard(run.label())
            bar.set_postfix_str("running: " + ", ".join(sorted(running)))
            bar.update(1)
        return outcome

    executor = concurrent.futures.ThreadPoolExecutor(max_workers=max(1, jobs))
    futures: list[concurrent.futures.Future] = []
    try:
        futures = [executor.submit(one, run) for run in todo]
        for future in concurrent.futures.as_completed(futures):
            outcome = future.result()
            outcomes.append(outcome)
            write(_outcome_line(outcome))
    except KeyboardInterrupt:
        for future in futures:
            future.cancel()
        if hasattr(runner, "terminate_all"):
            runner.terminate_all()
        raise
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
        bar.close()
    return outcomes


def _outcome_line(outcome: RunOutcome) -> str:
    run = outcome.run
    if not outcome.ok:
        reason = outcome.error or f"exit code {outcome.returncode}"
        return f"[sweep] FAILED {run.label()} after {format_duration(outcome.seconds)} ({reason}): see {run.directory}"
    summary = json.loads(run.summary_path.read_text())
    after = summary.get("after", {})
    return (
        f"[sweep] done {run.label()} in {format_duration(outcome.seconds)}: held-out hard "
        f"{format_percent(after.get('hard'))}, easy {format_percent(after.get('easy'))}"
    )


# ----------------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------------


def build_parser():
    import argparse

    parser = argparse.ArgumentParser(
        prog="scripts/demo_sweep.py",
        description="Run CPU-demo recipes x seeds in parallel (resumable) and write the Markdown table and plots of "
        "each sweep spec (recipes/demo/sweeps/*.yml). See docs/demo.md.",
    )
    parser.add_argument("specs", nargs="+", help="sweep spec files (one table each); runs shared by specs run once")
    parser.add_argument("--output_dir", default="runs/demo-sweep", help="runs and reports (default: %(default)s)")
    parser.add_argument(
        "--jobs", type=int, default=os.cpu_count() or 1, help="runs in parallel (default: the number of CPU cores)"
    )
    parser.add_argument("--seeds", type=int, nargs="+", help="run these seeds instead of the specs' seeds")
    parser.add_argument(
        "--extra",
        default="",
        help='overrides appended to every run, one string: --extra "--max_steps 5 --demo_train_prompts 64" (they '
        "change the runs' directories, so smoke tests never mix with full runs)",
    )
    parser.add_argument("--launcher", choices=("accelerate", "python"), default="accelerate")
    parser.add_argument("--report_only", action="store_true", help="write the reports from finished runs only")
    parser.add_argument("--dry_run", action="store_true", help="print the commands and exit")
    parser.add_argument("--no_progress", action="store_true", help="no progress bar")
    parser.add_argument("--repo", help="checkout holding scripts/train.py (default: found automatically)")
    return parser


def reproduce_command(spec: SweepSpec, args) -> str:
    words = ["python", "scripts/demo_sweep.py", spec.path or f"<{spec.table}.yml>"]
    if args.seeds:
        words += ["--seeds", *map(str, args.seeds)]
    if args.extra:
        words += ["--extra", args.extra]
    if args.output_dir != "runs/demo-sweep":
        words += ["--output_dir", args.output_dir]
    return shlex.join(words)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `scripts/demo_sweep.py`. Returns the exit code (1 when a run failed)."""
    from .sweep_report import write_report

    args = build_parser().parse_args(argv)
    if args.jobs < 1:
        raise SystemExit("--jobs must be >= 1.")
    repo = find_repo(args.repo)
    output_dir = Path(args.output_dir).resolve()
    extra = shlex.split(args.extra)
    specs = [load_spec(path) for path in args.specs]
    planned = {spec.table: plan_runs(spec, output_dir, args.seeds, extra) for spec in specs}
    if len(planned) != len(specs):
        raise SystemExit("Two sweep specs share a table name; rename one ('table:').")
    unique = list({run.directory: run for runs in planned.values() for run in runs}.values())
    unique.sort(key=lambda run: run.seed)  # seed-major over all tables: early seeds complete first
    missing = sorted({run.recipe for run in unique if not (repo / run.recipe).is_file()})
    if missing:
        raise SystemExit(f"Recipes not found under {repo}: {missing}.")
    if args.dry_run:
        for run in unique:
            state = "finished" if run.finished else "to run"
            print(f"# {run.label()} ({state})\n{shlex.join(launch_command(run, args.launcher))}")
        return 0
    failures: list[RunOutcome] = []
    if not args.report_only:
        for run in stale_runs(unique, repo):
            print(f"[sweep] warning: {run.label()} in {run.directory} ran with an older {run.recipe}; delete the "
                  "directory to run it again.")  # fmt: skip
        current = code_version(repo)
        for version, runs in recorded_versions(unique).items():
            if version != current:
                print(f"[sweep] warning: {len(runs)} finished run(s) come from code version {version}, this "
                      f"checkout is {current}: they are reused as they are (delete them to rerun).")  # fmt: skip
        todo = [run for run in unique if not run.finished]
        print(
            f"[sweep] {len(unique)} runs: {len(unique) - len(todo)} finished, {len(todo)} to run, {args.jobs} at a "
            f"time; results in {output_dir}"
        )
        if todo:
            for seed, labels in warmup_mismatches(build_warmups(todo, args.jobs)).items():
                print(f"[sweep] warning: the runs of seed {seed} start from different warm-ups (a demo_warmup_* "
                      f"override?): {labels}")  # fmt: skip
            runner = SubprocessRunner(repo, args.launcher)
            outcomes = run_all(
                todo,
                runner,
                args.jobs,
                repo,
                command=lambda run: launch_command(run, args.launcher),
                progress=not args.no_progress,
            )
            failures = [outcome for outcome in outcomes if not outcome.ok]
    for spec in specs:
        paths = write_report(spec, planned[spec.table], output_dir, reproduce_command(spec, args))
        print(f"[sweep] {spec.table}: " + ", ".join(str(path) for path in paths.values()))
    if failures:
        print(f"[sweep] {len(failures)} run(s) failed; their logs:")
        for outcome in failures:
            print(f"  {outcome.run.label()}: {outcome.run.directory / LOG_FILE}")
        return 1
    return 0
