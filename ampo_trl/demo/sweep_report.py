"""The report of a demo sweep (`ampo_trl.demo.sweep`): a Markdown table and PNG plots from the runs' result files.

For each run of a table and each metric (held-out greedy accuracy on hard and easy problems after training; pass@k
on the hard ones):

* **mean ± std over seeds**: ``std`` is the sample standard deviation (n - 1 in the denominator; "n/a" for one seed),
  and every seed's value is listed;
* **paired difference vs the baseline run**: for each seed that both runs finished, ``d_s = run_s - baseline_s``
  (same seed = same split, warm-up and data order, so the seed's difficulty cancels); reported as mean ± std of the
  ``d_s``, every ``d_s``, and in how many seeds ``d_s > 0``.

Plots: final accuracies (bars = means, error bars = std, dots = seeds), learning curves (mean over seeds with a
band of ± one std, on the steps every seed logged), and pass@k for k = 1..n (mean with a ± std band).
"""

from __future__ import annotations

import json
import os
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..reporting import format_duration, format_percent
from .sweep import PlannedRun, SweepSpec, recorded_versions

#: Held-out evaluations averaged by the pre-declared secondary metric (docs/demo.md): the last three of a run
#: (steps 600, 650 and 700 with ``--demo_eval_steps 50``), less sensitive to where the last step happens to land.
LAST_EVALUATIONS = 3
#: (label, path in the result file, path of the same metric before training) of the table's accuracy columns. A path
#: ending in ``@last<N>`` names the mean of the last N points of a curve.
ACCURACY_METRICS = (
    ("held-out hard", ("after", "hard"), ("before", "hard")),
    ("held-out easy", ("after", "easy"), ("before", "easy")),
    (
        f"held-out hard, last {LAST_EVALUATIONS} evaluations",
        ("curves", "demo/heldout_hard", f"@last{LAST_EVALUATIONS}"),
        ("before", "hard"),
    ),
)
#: Two-sided 95% quantiles of Student's t for 1..10 degrees of freedom (the paired intervals of a few seeds).
_T_975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228)
#: Learning curves drawn (result-file curve key, panel title).
CURVE_PANELS = (
    ("demo/heldout_hard", "held-out hard accuracy (greedy)"),
    ("demo/accuracy_hard", "sampled accuracy, hard training prompts"),
)
PASS_AT_K_COLUMNS = (1, 2, 4, 8, 16, 32)
BEFORE = "before training (warm-up)"


@dataclass
class Stats:
    values: dict[int, float]  # seed -> value

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.values.values()) if self.values else None

    @property
    def std(self) -> float | None:
        return statistics.stdev(self.values.values()) if len(self.values) > 1 else None

    @property
    def interval95(self) -> tuple[float, float] | None:
        """The 95% Student-t confidence interval of the mean (2 to 11 values; None otherwise)."""
        n = len(self.values)
        if not 2 <= n <= len(_T_975) + 1:
            return None
        half = _T_975[n - 2] * self.std / n**0.5
        return self.mean - half, self.mean + half


def load_results(runs: Sequence[PlannedRun]) -> dict[str, dict[int, dict]]:
    """``{run name: {seed: result}}`` of the finished runs."""
    results: dict[str, dict[int, dict]] = {}
    for run in runs:
        results.setdefault(run.name, {})
        if run.finished:
            results[run.name][run.seed] = json.loads(run.summary_path.read_text())
    return results


def _get_raw(result: Mapping, path: Sequence[str]) -> Any:
    value: Any = result
    for key in path:
        if not isinstance(value, Mapping) or value.get(key) is None:
            return None
        value = value[key]
    return value


def _get(result: Mapping, path: Sequence[str]) -> float | None:
    """The number at ``path``; a path ending in ``@last<N>`` gives the mean of the curve's last N points."""
    if path and path[-1].startswith("@last"):
        points = _get_raw(result, path[:-1])
        count = int(path[-1].removeprefix("@last"))
        if not isinstance(points, list) or len(points) < count:
            return None
        return statistics.fmean(float(point[1]) for point in points[-count:])
    value = _get_raw(result, path)
    return None if value is None else float(value)


def metric(results: Mapping[int, Mapping], path: Sequence[str]) -> Stats:
    """The metric at ``path`` of every seed's result (seeds where it is missing are left out)."""
    values = {seed: _get(result, path) for seed, result in results.items()}
    return Stats({seed: value for seed, value in sorted(values.items()) if value is not None})


def paired_difference(run: Stats, baseline: Stats) -> Stats:
    """Per-seed differences ``run - baseline`` over the seeds both have."""
    return Stats({seed: run.values[seed] - baseline.values[seed] for seed in run.values if seed in baseline.values})


def before_metric(results: Mapping[str, Mapping[int, Mapping]], path: Sequence[str]) -> Stats:
    """The metric before training, one value per seed (every method of a seed starts from the same student; the
    first run that has it is used)."""
    values: dict[int, float] = {}
    for per_seed in results.values():
        for seed, result in per_seed.items():
            value = _get(result, path)
            if value is not None:
                values.setdefault(seed, value)
    return Stats(dict(sorted(values.items())))


def mixed_warmups(results: Mapping[str, Mapping[int, Mapping]]) -> list[str]:
    """Seeds whose runs started from different warm-ups (they must not: the comparison is paired by seed)."""
    keys: dict[int, set[str]] = {}
    for per_seed in results.values():
        for seed, result in per_seed.items():
            keys.setdefault(seed, set()).add(str(result.get("warmup", {}).get("key")))
    return [f"seed {seed}: {sorted(k)}" for seed, k in sorted(keys.items()) if len(k) > 1]


def _pct(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "n/a"
    return ("+" if signed and value >= 0 else "") + format_percent(value, unit="")


def _mean_std(stats: Stats, signed: bool = False) -> str:
    if stats.mean is None:
        return "n/a"
    std = stats.std
    return _pct(stats.mean, signed) + (f" ± {format_percent(std, unit='')}" if std is not None else "")


def _difference(diff: Stats) -> str:
    """``mean ± std [95% interval] (positive in k/n seeds)``."""
    if not diff.values:
        return "n/a"
    wins = sum(value > 0 for value in diff.values.values())
    interval = diff.interval95
    bounds = f" [{_pct(interval[0], True)}, {_pct(interval[1], True)}]" if interval else ""
    return f"{_mean_std(diff, signed=True)}{bounds} ({wins}/{len(diff.values)})"


def _per_seed(stats: Stats, signed: bool = False) -> str:
    return ", ".join(f"{_pct(value, signed)} (s{seed})" for seed, value in stats.values.items()) or "n/a"


def render_markdown(
    spec: SweepSpec,
    results: Mapping[str, Mapping[int, Mapping]],
    command: str = "",
    seeds: Sequence[int] | None = None,
) -> str:
    """The table of a sweep (see the module docstring), in percent. ``seeds``: the seeds the sweep ran (default: the
    spec's)."""
    seeds = list(spec.seeds if seeds is None else seeds)
    first = next((result for per_seed in results.values() for result in per_seed.values()), {})
    eval_sizes = first.get("eval_problems", {})
    lines = [f"### {spec.title}", ""]
    if command:
        lines += ["```bash", command, "```", ""]
    lines.append(
        f"Seeds {seeds}; held-out {eval_sizes.get('easy', '?')} easy / {eval_sizes.get('hard', '?')} hard "
        f"problems, greedy, leak-free split (task version {first.get('task_version', '?')}); accuracies in %, "
        "mean ± sample std over seeds."
        + (
            f" Δ: paired per-seed difference vs {spec.baseline} (run − baseline, same seed): mean ± std, [95% t "
            "interval of the mean], (seeds where it is > 0)."
            if spec.baseline
            else ""
        )
    )
    if spec.notes:
        lines += ["", spec.notes]
    lines.append("")
    headers = ["method", "seeds"]
    for label, _, _ in ACCURACY_METRICS:
        headers += [f"{label}", f"{label}, per seed"]
        if spec.baseline:
            headers += [f"Δ {label} vs {spec.baseline} (> 0 in)", f"Δ {label}, per seed"]
    lines += ["| " + " | ".join(headers) + " |", "|" + "|".join(["---"] * len(headers)) + "|"]
    before_cells = [BEFORE, str(len(before_metric(results, ("before", "hard")).values))]
    for _, _, before_path in ACCURACY_METRICS:
        stats = before_metric(results, before_path)
        before_cells += [_mean_std(stats), _per_seed(stats)] + (["", ""] if spec.baseline else [])
    lines.append("| " + " | ".join(before_cells) + " |")
    for run in spec.runs:
        per_seed = results.get(run.name, {})
        cells = [run.name, str(len(per_seed))]
        for _, path, _ in ACCURACY_METRICS:
            stats = metric(per_seed, path)
            cells += [_mean_std(stats), _per_seed(stats)]
            if spec.baseline:
                if run.name == spec.baseline:
                    cells += ["(baseline)", ""]
                else:
                    diff = paired_difference(stats, metric(results.get(spec.baseline, {}), path))
                    cells += [_difference(diff), _per_seed(diff, signed=True)]
        lines.append("| " + " | ".join(cells) + " |")
    pass_table = render_pass_at_k_markdown(spec, results)
    if pass_table:
        lines += ["", pass_table]
    lines += _durations(spec, results)
    mismatches = mixed_warmups(results)
    if mismatches:
        lines += ["", "**Warning: runs of one seed started from different warm-ups:** " + "; ".join(mismatches)]
    missing = [
        f"{run.name} seed {seed}" for run in spec.runs for seed in seeds if seed not in results.get(run.name, {})
    ]
    if missing:
        lines += ["", f"Not finished ({len(missing)}): " + ", ".join(missing) + "."]
    return "\n".join(lines) + "\n"


def _durations(spec: SweepSpec, results: Mapping[str, Mapping[int, Mapping]]) -> list[str]:
    """How long the runs took: wall-clock (depends on the machine's other jobs) and CPU time, per method."""
    parts = []
    for run in spec.runs:
        per_seed = list(results.get(run.name, {}).values())
        wall = [r["total_seconds"] for r in per_seed if r.get("total_seconds") is not None]
        cpu = [r["cpu_seconds"] for r in per_seed if r.get("cpu_seconds") is not None]
        if wall:
            text = f"{run.name} {format_duration(statistics.fmean(wall))} wall"
            if cpu:
                text += f" / {format_duration(statistics.fmean(cpu))} CPU"
            parts.append(text)
    if not parts:
        return []
    return ["", "Mean time per run (train script, imports excluded): " + "; ".join(parts) + "."]


def _pass_at_k_runs(spec: SweepSpec) -> list[str]:
    return list(spec.pass_at_k) if spec.pass_at_k is not None else [run.name for run in spec.runs]


def render_pass_at_k_markdown(spec: SweepSpec, results: Mapping[str, Mapping[int, Mapping]]) -> str:
    """pass@k on the held-out hard problems (mean ± std over seeds), or "" when no run has it."""
    names = _pass_at_k_runs(spec)
    samples = {
        r.get("pass_at_k", {}).get("samples")
        for name in names
        for r in results.get(name, {}).values()
        if r.get("pass_at_k", {}).get("after")
    }
    if not samples:
        return ""
    n = max(samples)
    ks = [k for k in PASS_AT_K_COLUMNS if k <= n] + ([n] if n not in PASS_AT_K_COLUMNS else [])
    headers = ["method"] + [f"pass@{k}" for k in ks]
    lines = [
        f"pass@k on the held-out hard problems ({n} samples per problem at temperature 1.0, unbiased estimator), "
        "in %, mean ± std over seeds:",
        "",
        "| " + " | ".join(headers) + " |",
        "|" + "|".join(["---"] * len(headers)) + "|",
    ]
    rows = [(BEFORE, None)] + [(name, name) for name in names]
    for label, name in rows:
        cells = [label]
        for k in ks:
            if name is None:
                stats = before_metric({n_: results.get(n_, {}) for n_ in names}, ("pass_at_k", "before", str(k)))
            else:
                stats = metric(results.get(name, {}), ("pass_at_k", "after", str(k)))
            cells.append(_mean_std(stats))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------
# Plots
# ----------------------------------------------------------------------------------------------------------


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _save(figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    _pyplot().close(figure)
    return path


def plot_final(spec: SweepSpec, results: Mapping[str, Mapping[int, Mapping]], path: str | os.PathLike) -> Path:
    """Bars: mean held-out accuracy after training per run (error bars: std over seeds; dots: the seeds), with the
    warm-up's accuracy as a dashed line."""
    plt = _pyplot()
    names = [run.name for run in spec.runs]
    figure, axes = plt.subplots(1, len(ACCURACY_METRICS), figsize=(1.2 * len(names) + 4, 4.2), squeeze=False)
    for axis, (label, path_, before_path) in zip(axes[0], ACCURACY_METRICS):
        for index, name in enumerate(names):
            stats = metric(results.get(name, {}), path_)
            if stats.mean is None:
                continue
            axis.bar(index, 100 * stats.mean, yerr=100 * (stats.std or 0.0), capsize=4, alpha=0.7)
            axis.scatter([index] * len(stats.values), [100 * v for v in stats.values.values()], color="k", s=10)
        before = before_metric(results, before_path)
        if before.mean is not None:
            axis.axhline(100 * before.mean, color="gray", linestyle="--", label=BEFORE)
            axis.legend(fontsize=8, loc="upper left")
        axis.set_xticks(range(len(names)))
        axis.set_xticklabels(names, rotation=25, ha="right", fontsize=8)
        axis.set_ylabel(f"{label} accuracy (%)")
        axis.set_ylim(0, 118)  # room above 100% for the legend
        axis.set_yticks(range(0, 101, 20))
        axis.grid(axis="y", alpha=0.3)
    figure.suptitle(f"{spec.title} (mean ± std over seeds, dots: seeds)", fontsize=10)
    return _save(figure, Path(path))


def _aligned(per_seed: Mapping[int, Mapping], key: str) -> tuple[list[float], list[list[float]]]:
    """Steps every seed logged for curve ``key``, and each seed's values on them."""
    series = []
    for result in per_seed.values():
        points = {float(step): float(value) for step, value in result.get("curves", {}).get(key, [])}
        if points:
            series.append(points)
    if not series:
        return [], []
    steps = sorted(set.intersection(*(set(points) for points in series)))
    return steps, [[points[step] for step in steps] for points in series]


def _band(axis, xs: Sequence[float], rows: Sequence[Sequence[float]], label: str, scale: float = 100.0) -> None:
    means = [statistics.fmean(column) for column in zip(*rows)]
    stds = [statistics.stdev(column) if len(column) > 1 else 0.0 for column in zip(*rows)]
    line = axis.plot(xs, [scale * m for m in means], label=f"{label} (n={len(rows)})")[0]
    axis.fill_between(
        xs,
        [scale * max(0.0, m - s) for m, s in zip(means, stds)],
        [scale * min(1.0, m + s) for m, s in zip(means, stds)],
        color=line.get_color(),
        alpha=0.2,
    )


def plot_curves(spec: SweepSpec, results: Mapping[str, Mapping[int, Mapping]], path: str | os.PathLike) -> Path:
    """Learning curves: mean over seeds with a ± std band, one panel per curve of `CURVE_PANELS`."""
    plt = _pyplot()
    figure, axes = plt.subplots(1, len(CURVE_PANELS), figsize=(6 * len(CURVE_PANELS), 4), squeeze=False)
    for axis, (key, title) in zip(axes[0], CURVE_PANELS):
        drawn = 0
        for run in spec.runs:
            steps, rows = _aligned(results.get(run.name, {}), key)
            if steps:
                _band(axis, steps, rows, run.name)
                drawn += 1
        if drawn:
            axis.legend(fontsize=8)
        else:
            axis.text(0.5, 0.5, "not logged", ha="center", va="center", transform=axis.transAxes)
        axis.set_title(title, fontsize=10)
        axis.set_xlabel("optimizer step")
        axis.set_ylabel("accuracy (%)")
        axis.grid(alpha=0.3)
    figure.suptitle(f"{spec.title}: learning curves (mean ± std over seeds)", fontsize=10)
    return _save(figure, Path(path))


def plot_pass_at_k(
    spec: SweepSpec, results: Mapping[str, Mapping[int, Mapping]], path: str | os.PathLike
) -> Path | None:
    """pass@k against k (log2 axis) on the held-out hard problems, mean with a ± std band; None when no run has it."""
    plt = _pyplot()
    names = _pass_at_k_runs(spec)
    figure, axis = plt.subplots(figsize=(7.5, 4.8))
    drawn, max_k = 0, 1
    before_rows: dict[int, list[float]] = {}
    for name in names:
        rows = []
        for seed, result in results.get(name, {}).items():
            curves = result.get("pass_at_k", {})
            for when in ("after", "before"):
                if curves.get(when):
                    ks = sorted(int(k) for k in curves[when])
                    values = [curves[when][str(k)] for k in ks]
                    if when == "after":
                        rows.append(values)
                    else:
                        before_rows.setdefault(seed, values)
                    max_k = max(max_k, ks[-1])
        if rows and len({len(row) for row in rows}) == 1:
            _band(axis, list(range(1, len(rows[0]) + 1)), rows, name)
            drawn += 1
    if not drawn:
        plt.close(figure)
        return None
    before = list(before_rows.values())
    if before and len({len(row) for row in before}) == 1:
        _band(axis, list(range(1, len(before[0]) + 1)), before, BEFORE)
    axis.set_xscale("log", base=2)
    ticks = [k for k in (1, 2, 4, 8, 16, 32, 64, 128) if k <= max_k]
    axis.set_xticks(ticks)
    axis.set_xticklabels([str(k) for k in ticks])
    axis.set_xlabel("k")
    axis.set_ylabel("pass@k (%)")
    axis.set_title(f"{spec.title}\npass@k on the held-out hard problems (temperature 1)", fontsize=9)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    return _save(figure, Path(path))


def write_report(
    spec: SweepSpec, runs: Sequence[PlannedRun], output_dir: str | os.PathLike, command: str = ""
) -> dict[str, Path]:
    """``<table>.md``, ``<table>_final.png``, ``<table>_curves.png`` and ``<table>_pass_at_k.png`` in
    ``output_dir``, from the finished runs."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    results = load_results(runs)
    paths = {"markdown": output_dir / f"{spec.table}.md"}
    seeds = sorted({run.seed for run in runs})
    text = render_markdown(spec, results, command, seeds)
    versions = recorded_versions(runs)
    if versions:
        text += (
            "\nCode version of the runs (`git describe`): "
            + "; ".join(f"{version} ({len(done)} runs)" for version, done in sorted(versions.items()))
            + ".\n"
        )
    paths["markdown"].write_text(text)
    if any(results.values()):
        paths["final"] = plot_final(spec, results, output_dir / f"{spec.table}_final.png")
        paths["curves"] = plot_curves(spec, results, output_dir / f"{spec.table}_curves.png")
        pass_plot = plot_pass_at_k(spec, results, output_dir / f"{spec.table}_pass_at_k.png")
        if pass_plot is not None:
            paths["pass_at_k"] = pass_plot
    return paths
