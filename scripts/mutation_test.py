"""Mutation testing of the core of ampo_trl with mutmut: how many deliberate one-line bugs do the tests catch?

    pip install -e ".[mutation]"          # mutmut (a dev tool, not needed to train or to run the tests)
    nice -n 10 python scripts/mutation_test.py                       # every target (about an hour on 2 cores)
    nice -n 10 python scripts/mutation_test.py guidance loss         # some targets
    nice -n 10 python scripts/mutation_test.py trainer-select --survivors   # and print each survivor's diff
    nice -n 10 python scripts/mutation_test.py guidance --mutants 'ampo_trl.guidance.x_group_seed__mutmut_6'

Each target mutates one module (for the trainer: one of the splice, the selection and the guidance wiring) and runs
only the tests relevant to it, in a scratch copy of the repository (`--workdir`, default under the system
temporary directory): the checkout is never modified. mutmut runs, for each mutant, the tests that executed the
mutated function, in a forked process. The result per target is printed as `killed / total` with the surviving
mutants, and written to `<workdir>/<target>/mutation-report.json`. docs/testing.md records the last scores and
why each survivor is harmless.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Target:
    module: str  # file to mutate, relative to the repository root
    tests: tuple[str, ...]  # test files (or node ids) run against its mutants
    functions: tuple[str, ...] = ()  # mutmut name globs restricting the mutants; empty: the whole module


# The trainer's mutants run against behavioural tests through `_generate_and_score_completions` and
# `_compute_loss` that check the splice and the decisions (about a minute in all, for each surviving mutant).
TRAINER_TESTS = (
    "tests/test_trainer_groups.py",
    "tests/test_trainer_decisions.py",
    "tests/test_trainer.py::test_triggered_groups_get_k_teacher_rows_with_teacher_tokens",
    "tests/test_trainer.py::test_teacher_rows_get_positive_and_failed_rows_negative_advantages",
    "tests/test_trainer.py::test_the_two_teachers_of_a_group_are_distinct_pool_entries",
    "tests/test_trainer.py::test_completion_table_shows_teacher_rows",
    "tests/test_trainer.py::test_guidance_metrics_are_recorded",
    "tests/test_trainer.py::test_every_group_trigger_puts_teacher_rows_into_groups_that_are_all_correct",
    "tests/test_trainer.py::test_shortest_selection_and_decisions_are_reproducible",
    "tests/test_trainer.py::test_token_budget_bounds_the_scoring_forwards",
    "tests/test_trainer.py::test_comprehension_selection_picks_the_best_understood_solutions",
    "tests/test_trainer.py::test_comprehension_options_reach_the_score",
    "tests/test_trainer.py::test_empty_pools_and_overlong_solutions_are_counted_not_dropped_silently",
    "tests/test_trainer.py::test_teacher_reward_floor_raises_teacher_rows_before_normalising",
    "tests/test_trainer.py::test_random_selection_runs_no_scoring_forward",
    "tests/test_trainer.py::test_splice_leaves_prompts_alone_when_they_are_as_wide_as_the_completions",
    "tests/test_trainer.py::test_an_unknown_per_token_field_from_a_newer_trl_stops_with_a_clear_error",
    "tests/test_trainer.py::test_every_loss_option_is_grpo_on_sampled_rows_plus_shaping_on_teacher_rows[settings0]",
    "tests/test_trainer.py::test_every_loss_option_is_grpo_on_sampled_rows_plus_shaping_on_teacher_rows[settings11]",
    "tests/test_loss.py::test_token_mode_is_one_token_mean_over_all_tokens",
    "tests/test_loss.py::test_constant_mode_with_dr_grpo_is_the_released_code_normalisation",
    "tests/test_loss.py::test_entropy_bonus_and_kl_stay_finite_with_teacher_rows",
    "tests/test_scale.py::test_vllm_teacher_rows_are_excluded_from_importance_sampling",
    "tests/test_scale.py::test_vllm_sequence_level_correction_gives_teacher_rows_ratio_one",
    "tests/test_scale.py::test_marks_survive_shuffle_and_split_with_accumulation_and_iterations",
)

TARGETS = {
    "guidance": Target("ampo_trl/guidance.py", ("tests/test_guidance.py",)),
    "comprehension": Target("ampo_trl/comprehension.py", ("tests/test_comprehension.py",)),
    "advantages": Target(
        "ampo_trl/advantages.py",
        ("tests/test_advantages.py", "tests/test_trainer.py::test_advantage_function_matches_trl"),
    ),
    "loss": Target("ampo_trl/loss.py", ("tests/test_loss.py",)),
    "trainer-select": Target(
        "ampo_trl/trainer.py", TRAINER_TESTS, functions=("ampo_trl.trainer.xǁAMPOTrainerǁ_select__mutmut_*",)
    ),
    "trainer-splice": Target(
        "ampo_trl/trainer.py",
        TRAINER_TESTS,
        functions=("ampo_trl.trainer.xǁAMPOTrainerǁ_splice_teacher_rows__mutmut_*",),
    ),
    "trainer-guidance": Target(
        "ampo_trl/trainer.py", TRAINER_TESTS, functions=("ampo_trl.trainer.xǁAMPOTrainerǁ_apply_guidance__mutmut_*",)
    ),
}

# Outcomes as mutmut records them (exit code of the test run against the mutant).
KILLED_CODES = {1, 3}  # a test failed / pytest internal error
SURVIVED_CODES = {0}
TIMEOUT_CODES = {24, -24, 36, 152, 255}  # the mutant made the tests loop: counted as killed (a hang is caught)


def mutmut_config(target: Target) -> str:
    """The [tool.mutmut] table for one target (TOML)."""
    selection = ", ".join(json.dumps(test) for test in target.tests)
    return f"""
[tool.mutmut]
source_paths = ["ampo_trl"]
only_mutate = [{json.dumps(target.module)}]
pytest_add_cli_args = ["-p", "no:cacheprovider", "-m", "not distributed", "-W", "ignore"]
pytest_add_cli_args_test_selection = [{selection}]
process_isolation = "forkserver"  # torch is not fork-safe once its threads run
use_git_change_detection = false
timeout_multiplier = 5.0
"""


def prepare(target_name: str, target: Target, workdir: Path) -> Path:
    """A fresh scratch copy: the package, the tests and pyproject.toml with this target's mutmut table."""
    scratch = workdir / target_name
    if scratch.exists():
        shutil.rmtree(scratch)
    scratch.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "ampo_trl", scratch / "ampo_trl", ignore=ignore)
    shutil.copytree(ROOT / "tests", scratch / "tests", ignore=ignore)
    (scratch / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text() + mutmut_config(target))
    return scratch


def mutmut_command() -> list[str]:
    executable = shutil.which("mutmut")
    if executable is None:
        sys.exit('mutmut is not installed: pip install -e ".[mutation]" (or set PATH to a venv that has it).')
    return [executable]


def run_target(
    target_name: str, target: Target, workdir: Path, max_children: int, mutants: list[str] | None = None
) -> dict:
    if mutants:  # re-check given mutants only (e.g. the survivors of a previous run, after adding tests)
        target = Target(target.module, target.tests, functions=tuple(mutants))
    scratch = prepare(target_name, target, workdir)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    env.pop("PYTHONPATH", None)  # the mutated copy under <scratch>/mutants must be the ampo_trl the tests import
    command = [*mutmut_command(), "run", f"--max-children={max_children}", *target.functions]
    print(f"[{target_name}] {' '.join(command)}  (in {scratch})", flush=True)
    log = scratch / "mutmut.log"
    with open(log, "w") as handle:
        completed = subprocess.run(command, cwd=scratch, env=env, stdout=handle, stderr=subprocess.STDOUT)
    if completed.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
        raise SystemExit(f"[{target_name}] mutmut failed (exit {completed.returncode}); end of {log}:\n{tail}")
    return report(target_name, target, scratch, env)


def report(target_name: str, target: Target, scratch: Path, env: dict) -> dict:
    meta = json.loads((scratch / "mutants" / f"{target.module}.meta").read_text())
    outcomes = {
        name: code
        for name, code in meta["exit_code_by_key"].items()
        if not target.functions or any(fnmatch.fnmatch(name, pattern) for pattern in target.functions)
    }
    killed = sorted(name for name, code in outcomes.items() if code in KILLED_CODES | TIMEOUT_CODES)
    survived = sorted(name for name, code in outcomes.items() if code in SURVIVED_CODES)
    other = {name: code for name, code in outcomes.items() if name not in killed and name not in survived}
    diffs = {}
    for name in survived:
        shown = subprocess.run(
            [*mutmut_command(), "show", name], cwd=scratch, env=env, capture_output=True, text=True, check=False
        )
        diffs[name] = shown.stdout
    result = {
        "target": target_name,
        "module": target.module,
        "tests": list(target.tests),
        "total": len(outcomes),
        "killed": len(killed),
        "survived": survived,
        "not_run": other,  # "no tests" (33: no selected test executes the function), skipped, ...
        "score": len(killed) / max(1, len(outcomes)),
        "survivor_diffs": diffs,
    }
    (scratch / "mutation-report.json").write_text(json.dumps(result, indent=2))
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "targets", nargs="*", metavar="TARGET", choices=[[], *TARGETS], help=f"default: all of {list(TARGETS)}"
    )
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "ampo-mutation")
    parser.add_argument("--max-children", type=int, default=max(1, (os.cpu_count() or 2) - 1))
    parser.add_argument("--survivors", action="store_true", help="print the diff of every surviving mutant")
    parser.add_argument(
        "--mutants", nargs="+", help="only these mutant names (one target), e.g. a previous run's survivors"
    )
    args = parser.parse_args(argv)
    targets = args.targets or list(TARGETS)
    if args.mutants and len(targets) != 1:
        parser.error("--mutants needs exactly one target")
    results = [run_target(name, TARGETS[name], args.workdir, args.max_children, args.mutants) for name in targets]
    print()
    print(f"{'target':<14} {'killed':>7} {'total':>6} {'score':>7}  survivors")
    for result in results:
        print(
            f"{result['target']:<14} {result['killed']:>7} {result['total']:>6} {result['score']:>7.1%}  "
            f"{len(result['survived'])}" + (f" (+{len(result['not_run'])} not run)" if result["not_run"] else "")
        )
    for result in results:
        for name in result["survived"]:
            print(f"survived: {name}")
            if args.survivors:
                print(result["survivor_diffs"][name])


if __name__ == "__main__":
    main()
