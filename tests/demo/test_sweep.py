"""The demo sweep tool: specs, run planning (shared directories, seeds, commands), parallel resumable execution with
a stand-in runner, the report's statistics and plots, and one real end-to-end sweep of the train script."""

import json
import statistics
from pathlib import Path

import pytest

from ampo_trl.demo import sweep, sweep_report
from ampo_trl.demo.run import SUMMARY_FILE

REPO = Path(__file__).resolve().parents[2]

SPEC = {
    "table": "t",
    "seeds": [0, 1, 2],
    "baseline": "GRPO",
    "overrides": ["--demo_eval_steps", "50"],
    "runs": [
        {"name": "AMPO", "recipe": "recipes/demo/ampo_cpu.yaml"},
        {"name": "GRPO", "recipe": "recipes/demo/grpo_cpu.yaml"},
        {"name": "k=1", "recipe": "recipes/demo/ampo_cpu.yaml", "overrides": ["--num_replacements", "1"]},
    ],
}


@pytest.mark.parametrize(
    "change, message",
    [
        ({"colour": "red"}, "unknown keys"),
        ({"baseline": "SFT"}, "baseline 'SFT' is not one of the runs"),
        ({"seeds": [0, 0]}, "distinct integers"),
        ({"seeds": None}, "'seeds' is required"),
        ({"runs": [{"name": "a", "recipe": "r"}, {"name": "a", "recipe": "q"}]}, "repeated: \\['a'\\]"),
        ({"runs": [{"name": "a"}]}, "runs\\[0\\]"),
        ({"pass_at_k": ["nobody"]}, "pass_at_k"),
        ({"table": "a b"}, "names report files"),
    ],
)
def test_bad_specs_are_rejected_with_the_key_to_fix(change, message):
    with pytest.raises(ValueError, match=message):
        sweep.parse_spec({**SPEC, **change}, "bad.yml")


def test_plan_is_seed_major_and_shares_directories_between_tables(tmp_path):
    spec = sweep.parse_spec(SPEC)
    runs = sweep.plan_runs(spec, tmp_path)
    assert [(run.name, run.seed) for run in runs[:4]] == [("AMPO", 0), ("GRPO", 0), ("k=1", 0), ("AMPO", 1)]
    reference = [{"name": "ref", "recipe": "recipes/demo/ampo_cpu.yaml"}]
    other = sweep.parse_spec({**SPEC, "table": "u", "baseline": "ref", "runs": reference})
    assert sweep.plan_runs(other, tmp_path)[0].directory == runs[0].directory  # same recipe + overrides: same run
    assert len({run.directory for run in runs}) == 9
    smoke = sweep.plan_runs(spec, tmp_path, seeds=[5], extra=["--max_steps", "3"])
    assert [run.seed for run in smoke] == [5, 5, 5]
    assert smoke[0].directory.parent != runs[0].directory.parent  # smoke runs never mix with full runs
    k1 = runs[2]
    assert k1.train_args() == [
        "--config", "recipes/demo/ampo_cpu.yaml", "--demo_seed", "0", "--seed", "0", "--output_dir",
        str(k1.directory), "--demo_eval_steps", "50", "--num_replacements", "1",
    ]  # fmt: skip
    command = sweep.launch_command(k1)
    assert command[1:6] == ["-m", "accelerate.commands.launch", "--config_file", "accelerate_configs/single.yaml",
                            "scripts/train.py"]  # fmt: skip
    assert sweep.launch_command(k1, "python")[1] == "scripts/train.py"


def _summary(hard, easy=1.0, key="w0", curve=None, pass_at_k=None, seconds=10.0):
    return {
        "after": {"hard": hard, "easy": easy},
        "before": {"hard": 0.05, "easy": 1.0},
        "warmup": {"key": key},
        "eval_problems": {"easy": 200, "hard": 200},
        "task_version": 2,
        "total_seconds": seconds,
        "curves": {"demo/heldout_hard": curve or [[0, 0.05], [50, hard / 2], [100, hard]]},
        "pass_at_k": {"samples": 4, **(pass_at_k or {})},
    }


def _fake_runner(outcomes):
    """A runner that writes a result file (or fails) as ``outcomes[(name, seed)]`` says, and records its calls."""
    calls = []

    def run(planned):
        calls.append((planned.name, planned.seed))
        outcome = outcomes[(planned.name, planned.seed)]
        if outcome == "raise":
            raise RuntimeError("broken")
        if outcome == "fail":
            return 3
        planned.summary_path.write_text(json.dumps(_summary(outcome, key=f"w{planned.seed}")))
        return 0

    run.calls = calls
    return run


def test_runs_in_parallel_survive_failures_and_resume(tmp_path):
    spec = sweep.parse_spec({**SPEC, "seeds": [0, 1]})
    runs = sweep.plan_runs(spec, tmp_path)
    outcomes = {(run.name, run.seed): 0.5 for run in runs}
    outcomes[("GRPO", 1)] = "fail"
    outcomes[("k=1", 0)] = "raise"
    runner = _fake_runner(outcomes)
    lines = []
    result = sweep.run_all(runs, runner, jobs=2, repo=REPO, progress=False, log=lines.append)
    assert sorted(runner.calls) == sorted(outcomes)
    failed = sorted(outcome.run.label() for outcome in result if not outcome.ok)
    assert failed == ["GRPO seed 1", "k=1 seed 0"]
    assert sum("FAILED" in line for line in lines) == 2 and any("held-out hard 50.0%" in line for line in lines)
    record = json.loads((runs[0].directory / sweep.COMMAND_FILE).read_text())
    assert record["command"][:2] == ["--config", "recipes/demo/ampo_cpu.yaml"] and record["recipe_sha256"]
    assert record["code_version"] == sweep.code_version(REPO)
    assert sum(len(done) for done in sweep.recorded_versions(runs).values()) == 4  # the finished ones
    # Resume: only the two failed runs run again.
    outcomes.update({("GRPO", 1): 0.25, ("k=1", 0): 0.5})
    again = _fake_runner(outcomes)
    sweep.run_all(runs, again, jobs=2, repo=REPO, progress=False, log=lines.append)
    assert sorted(again.calls) == [("GRPO", 1), ("k=1", 0)]
    assert all(run.finished for run in runs)
    assert sweep.run_all(runs, again, jobs=2, repo=REPO, progress=False) == []


def test_stale_results_are_detected(tmp_path):
    repo = tmp_path / "repo"
    (repo / "recipes").mkdir(parents=True)
    (repo / "recipes/r.yaml").write_text("a: 1\n")
    spec = sweep.parse_spec({"table": "t", "seeds": [0], "runs": [{"name": "r", "recipe": "recipes/r.yaml"}]})
    runs = sweep.plan_runs(spec, tmp_path / "out")
    sweep.run_all(runs, _fake_runner({("r", 0): 0.5}), jobs=1, repo=repo, progress=False, log=lambda line: None)
    assert sweep.stale_runs(runs, repo) == []
    (repo / "recipes/r.yaml").write_text("a: 2\n")
    assert sweep.stale_runs(runs, repo) == runs


def test_warmup_mismatches_name_the_seed():
    run = sweep.PlannedRun("AMPO", "r", (), 0, Path("x"))
    other = sweep.PlannedRun("GRPO", "r", (), 0, Path("y"))
    later = sweep.PlannedRun("AMPO", "r", (), 1, Path("z"))
    assert sweep.warmup_mismatches({"a": [run, later], "b": [other]}) == {0: ["AMPO seed 0", "GRPO seed 0"]}
    assert sweep.warmup_mismatches({"a": [run, other], "b": [later]}) == {}


def _results():
    hard = {"AMPO": [0.50, 0.60, 0.40], "GRPO": [0.30, 0.30, 0.35], "k=1": [0.45, 0.20]}
    results = {}
    for name, values in hard.items():
        results[name] = {}
        for seed, value in enumerate(values):
            curves = {"after": {str(k): min(1.0, value * k) for k in range(1, 5)}}
            curves["before"] = {str(k): 0.05 * k for k in range(1, 5)}
            results[name][seed] = _summary(value, easy=0.9 + 0.01 * seed, key=f"w{seed}", pass_at_k=curves)
    return results


def test_table_reports_mean_std_seeds_and_paired_differences():
    spec = sweep.parse_spec(SPEC)
    text = sweep_report.render_markdown(spec, _results(), command="python scripts/demo_sweep.py t.yml")
    rows = {}
    for line in text.splitlines():
        if line.startswith("| "):
            rows.setdefault(line.split(" | ")[0].lstrip("| "), line)  # the accuracy table comes first
    ampo = rows["AMPO"].split(" | ")
    std = 100 * statistics.stdev([0.5, 0.6, 0.4])
    assert ampo[1] == "3" and ampo[2] == f"50.0 ± {std:.1f}" and ampo[3] == "50.0 (s0), 60.0 (s1), 40.0 (s2)"
    differences = [0.20, 0.30, 0.05]  # AMPO - GRPO per seed
    mean, std = statistics.fmean(differences), statistics.stdev(differences)
    half = 4.303 * std / 3**0.5  # t(0.975, 2 degrees of freedom)
    assert ampo[4] == (
        f"+{100 * mean:.1f} ± {100 * std:.1f} [{100 * (mean - half):+.1f}, +{100 * (mean + half):.1f}] (3/3)"
    )
    assert ampo[5] == "+20.0 (s0), +30.0 (s1), +5.0 (s2)"
    # Secondary metric: mean of the last 3 held-out evaluations (curve [0.05, h/2, h] -> 0.05/3 + h/2).
    last3 = [0.05 / 3 + value / 2 for value in (0.5, 0.6, 0.4)]
    assert ampo[10] == f"{100 * statistics.fmean(last3):.1f} ± {100 * statistics.stdev(last3):.1f}"
    assert ampo[13] == "+10.0 (s0), +15.0 (s1), +2.5 (s2) |"
    assert rows["GRPO"].split(" | ")[4] == "(baseline)"
    k1 = rows["k=1"].split(" | ")
    assert k1[1] == "2" and k1[4].endswith("(1/2)") and k1[5] == "+15.0 (s0), -10.0 (s1)"
    assert rows["before training (warm-up)"].split(" | ")[2] == "5.0 ± 0.0"
    assert "Not finished (1): k=1 seed 2." in text and "python scripts/demo_sweep.py t.yml" in text
    partial = sweep_report.render_markdown(spec, _results(), seeds=[0, 1])  # a sweep run with --seeds 0 1
    assert "Seeds [0, 1];" in partial and "Not finished" not in partial
    assert "| pass@1 | pass@2 | pass@4 |" in text
    assert "Mean time per run (train script, imports excluded): AMPO 0m10s wall;" in text
    assert "Warning" not in text
    mixed = _results()
    mixed["GRPO"][1]["warmup"]["key"] = "other"
    assert "seed 1: ['other', 'w1']" in sweep_report.render_markdown(spec, mixed)


def test_single_seed_has_no_std():
    stats = sweep_report.Stats({3: 0.5})
    assert stats.mean == 0.5 and stats.std is None and stats.interval95 is None
    assert sweep_report.paired_difference(stats, sweep_report.Stats({4: 0.1})).values == {}


def test_interval_uses_student_t_and_last_evaluations_need_enough_points():
    low, high = sweep_report.Stats({0: 0.1, 1: 0.3}).interval95  # t(0.975, 1) = 12.706, std = 0.1414
    assert low == pytest.approx(0.2 - 12.706 * 0.1) and high == pytest.approx(0.2 + 12.706 * 0.1)
    short = {0: _summary(0.5, curve=[[0, 0.1], [50, 0.5]])}
    assert sweep_report.metric(short, ("curves", "demo/heldout_hard", "@last3")).values == {}
    assert sweep_report.metric(short, ("curves", "demo/heldout_hard", "@last2")).values == {0: pytest.approx(0.3)}


def test_report_files_and_command_line(tmp_path, capsys):
    spec_path = tmp_path / "t.yml"
    spec_path.write_text(json.dumps({**SPEC, "table": "tiny"}))  # JSON is YAML
    out = tmp_path / "out"
    spec = sweep.load_spec(spec_path)
    for run in sweep.plan_runs(spec, out):
        result = _results()[run.name].get(run.seed)
        if result is not None:
            run.directory.mkdir(parents=True)
            run.summary_path.write_text(json.dumps(result))
    assert sweep.main([str(spec_path), "--output_dir", str(out), "--report_only", "--repo", str(REPO)]) == 0
    for name in ("tiny.md", "tiny_final.png", "tiny_curves.png", "tiny_pass_at_k.png"):
        assert (out / name).is_file(), name
    assert (out / "tiny_final.png").read_bytes()[:4] == b"\x89PNG"
    assert "AMPO" in (out / "tiny.md").read_text()
    assert sweep.main([str(spec_path), "--output_dir", str(out), "--dry_run", "--repo", str(REPO)]) == 0
    printed = capsys.readouterr().out
    assert "# k=1 seed 2 (to run)" in printed and "# AMPO seed 0 (finished)" in printed
    bad = tmp_path / "bad.yml"
    bad.write_text(
        json.dumps({**SPEC, "runs": [{"name": "x", "recipe": "recipes/demo/missing.yaml"}], "baseline": None})
    )
    with pytest.raises(SystemExit, match="missing.yaml"):
        sweep.main([str(bad), "--output_dir", str(out), "--dry_run", "--repo", str(REPO)])


def test_every_shipped_sweep_spec_runs_real_options():
    """Each spec's runs parse with the train script's own parser (so every override is a real option), and the
    ablation tables vary exactly the switch they are about."""
    from ampo_trl.cli.arguments import parse_args

    specs = {path.stem: sweep.load_spec(path) for path in sorted((REPO / "recipes/demo/sweeps").glob("*.yml"))}
    assert set(specs) == {"main", "main_vs_luffy", "trigger", "selection", "k", "aggregation"}
    assert len(specs["main"].seeds) >= 5 and all(len(spec.seeds) >= 3 for spec in specs.values())
    ablated = {"trigger": "guidance_trigger", "selection": "guidance_selection", "k": "num_replacements",
               "aggregation": "off_policy_aggregation"}  # fmt: skip
    expected = {"trigger": {"all_fail", "always"}, "selection": {"comprehension", "shortest", "random"},
                "k": {1, 2, 3}, "aggregation": {"sequence", "token"}}  # fmt: skip
    main_ampo = sweep.plan_runs(specs["main"], "out")[0]
    assert main_ampo.name == "AMPO"
    for name, spec in specs.items():
        parsed = {run.name: parse_args(run.train_args())[1] for run in sweep.plan_runs(spec, "out", seeds=[0])}
        assert spec.baseline in parsed
        if name in ablated:
            assert {getattr(args, ablated[name]) for args in parsed.values()} == expected[name]
            # the reference run is the main table's AMPO run (same directory, so it runs once)
            assert main_ampo.directory in {run.directory for run in sweep.plan_runs(spec, "out")}
    main = {run.name: parse_args(run.train_args()) for run in sweep.plan_runs(specs["main"], "out", seeds=[0])}
    assert main["GRPO"][1].guidance_trigger == "never" and main["SFT on the pool"][0].demo_sft is True
    assert main["LUFFY-style"][1].guidance_trigger == "every_group"
    # the second primary comparison: the same runs (same directories), LUFFY-style as the reference
    assert specs["main_vs_luffy"].baseline == "LUFFY-style"
    assert {(run.name, run.directory) for run in sweep.plan_runs(specs["main_vs_luffy"], "out")} == {
        (run.name, run.directory) for run in sweep.plan_runs(specs["main"], "out")
    }


def test_end_to_end_sweep_runs_the_train_script(tmp_path, monkeypatch):
    """Two tiny runs of the real train script, in parallel, then the report; a second call runs nothing."""
    monkeypatch.setenv("AMPO_TRL_CACHE", str(tmp_path / "cache"))
    spec_path = tmp_path / "e2e.yml"
    spec_path.write_text(
        json.dumps(
            {
                "table": "e2e",
                "seeds": [0],
                "baseline": "GRPO",
                "runs": [
                    {"name": "AMPO", "recipe": "recipes/demo/ampo_cpu.yaml"},
                    {"name": "GRPO", "recipe": "recipes/demo/grpo_cpu.yaml"},
                ],
            }
        )
    )
    extra = (
        "--max_steps 1 --per_device_train_batch_size 16 --demo_warmup_steps 3 --demo_warmup_batch_size 8 "
        "--demo_train_prompts 16 --demo_eval_problems 8 --demo_pass_at_k_samples 2 --demo_plot false "
        "--logging_steps 1"
    )
    out = tmp_path / "out"
    # --launcher python: the same train script without accelerate's launcher process (launch_command is tested above)
    args = [str(spec_path), "--output_dir", str(out), "--jobs", "2", "--extra", extra, "--no_progress", "--launcher",
            "python"]  # fmt: skip
    assert sweep.main([*args, "--repo", str(REPO)]) == 0
    runs = sweep.plan_runs(sweep.load_spec(spec_path), out.resolve(), extra=extra.split())
    summaries = [json.loads(run.summary_path.read_text()) for run in runs]
    assert [s["steps"] for s in summaries] == [1, 1]
    assert summaries[0]["warmup"]["key"] == summaries[1]["warmup"]["key"]  # one student for both methods
    assert summaries[0]["warmup"]["cached"] and summaries[1]["warmup"]["cached"]  # built before the runs started
    assert "$ " in (runs[0].directory / sweep.LOG_FILE).read_text()
    report = (out / "e2e.md").read_text()
    assert (
        "| AMPO | 1 |" in report and f"Code version of the runs (`git describe`): {sweep.code_version(REPO)}" in report
    )
    stamp = runs[0].summary_path.stat().st_mtime
    assert sweep.main([*args, "--repo", str(REPO)]) == 0
    assert runs[0].summary_path.stat().st_mtime == stamp  # finished runs are skipped
    assert SUMMARY_FILE == runs[0].summary_path.name
