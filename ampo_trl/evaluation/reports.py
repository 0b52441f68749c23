"""Reports of evaluation results: the Table-1-shaped Markdown, per-run details, run comparisons, pass@k plots, the
per-sample JSONL, and reading results back."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..reporting import format_percent
from .benchmarks import BENCHMARKS, GROUPS
from .runner import EvaluationOutput

RESULTS_FILE = "results.json"
MARKDOWN_FILE = "results.md"
GENERATIONS_FILE = "generations.jsonl"
PLOT_FILE = "pass_at_k.png"


def _percent_cell(value: float | None) -> str:
    """A fraction as a table cell in percent without the sign (the headers say %); "–" when missing."""
    return format_percent(value, unit="", missing="–")


def _label(results: Mapping[str, Any]) -> str:
    return str(results.get("model", {}).get("label") or results.get("model", {}).get("name") or "model")


def _table1_keys(results_list: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[str]]:
    math_keys = list(GROUPS["math"][1])
    ood_keys = list(GROUPS["ood"][1])
    others = []
    for results in results_list:
        for key in results["benchmarks"]:
            if key not in BENCHMARKS and key not in others:
                others.append(key)
    return math_keys + ["@math"] + ood_keys + ["@ood"], others


def _benchmark_name(results_list: Sequence[Mapping[str, Any]], key: str) -> str:
    spec = BENCHMARKS.get(key)
    if spec is not None:
        return spec.name
    return next((r["benchmarks"][key]["name"] for r in results_list if key in r["benchmarks"]), key)


def render_table1_markdown(results_list: Sequence[Mapping[str, Any]]) -> str:
    """A Markdown table shaped like the paper's Table 1: one row per model, accuracy (%) per benchmark, and the
    unweighted group means. A mean over an incomplete group carries a dagger (†)."""
    columns, others = _table1_keys(results_list)
    headers = ["Model"]
    for column in columns:
        headers.append("Avg." if column.startswith("@") else BENCHMARKS[column].name)
    headers += [_benchmark_name(results_list, key) for key in others]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(["---"] + [":---:"] * (len(headers) - 1)) + "|"]
    dagger = False
    for results in results_list:
        cells = [_label(results)]
        for column in columns:
            if column.startswith("@"):
                group = results["groups"][column[1:]]
                cell = _percent_cell(group["accuracy"])
                if group["accuracy"] is not None and not group["complete"]:
                    cell += "†"
                    dagger = True
                cells.append(cell)
            else:
                cells.append(_percent_cell(results["benchmarks"].get(column, {}).get("accuracy")))
        cells += [_percent_cell(results["benchmarks"].get(key, {}).get("accuracy")) for key in others]
        lines.append("| " + " | ".join(cells) + " |")
    notes = ["Accuracy in % (avg@n: mean over problems of the fraction of correct samples). GPQA* = GPQA-diamond."]
    if dagger:
        notes.append("† mean over the benchmarks of the group that were evaluated (the group is incomplete).")
    return "\n".join(lines) + "\n\n" + " ".join(notes) + "\n"


def render_results_markdown(results: Mapping[str, Any]) -> str:
    """The full Markdown report of one run: Table 1 row, per-benchmark details, pass@k, settings, data notes."""
    settings = results["settings"]
    lines = [f"# Evaluation: {_label(results)}", ""]
    lines += [f"Model: `{results['model']['name']}`", ""]
    lines += ["## Table 1", "", render_table1_markdown([results])]
    lines += ["## Per benchmark", ""]
    lines += [
        "| Benchmark | data_source | scoring | problems | samples/problem | accuracy (%) | metric "
        "| mean length (tokens) | format (%) | answer found (%) | truncated (%) |",
        "|---|---|---|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    for b in results["benchmarks"].values():
        spp = b["samples_per_problem"]
        spp = spp if isinstance(spp, int) else f"{spp['min']}–{spp['max']}"
        length = "–" if b["mean_length"] is None else f"{b['mean_length']:.1f}"
        lines.append(
            f"| {b['name']} | {', '.join(b['data_sources'])} | {b['scoring']} | {b['num_problems']} | {spp} | "
            f"{_percent_cell(b['accuracy'])} | {b['metric']} | {length} | {_percent_cell(b['format_rate'])} | "
            f"{_percent_cell(b['answer_rate'])} | {_percent_cell(b['truncation_rate'])} |"
        )
    overall = results["overall"]
    mean_length = "–" if overall["mean_length"] is None else f"{overall['mean_length']:.1f}"
    lines += [
        "",
        f"Mean over benchmarks: accuracy {_percent_cell(overall['accuracy'])} %, length {mean_length} tokens.",
        "",
    ]
    ks = sorted({int(k) for b in results["benchmarks"].values() for k in b["pass_at_k"]})
    if ks:
        lines += ["## pass@k (%)", "", "| Benchmark | " + " | ".join(f"k={k}" for k in ks) + " |"]
        lines.append("|---|" + "---:|" * len(ks))
        for b in results["benchmarks"].values():
            lines.append(
                f"| {b['name']} | " + " | ".join(_percent_cell(b["pass_at_k"].get(str(k))) for k in ks) + " |"
            )
        lines += ["", "Unbiased estimator 1 − C(n−c, k)/C(n, k), averaged over problems; – where k > n.", ""]
    lines += ["## Settings", ""]
    for key in ("num_samples", "temperature", "top_p", "max_new_tokens", "seed", "expand_repeats", "verify_timeout"):
        lines.append(f"- {key}: {settings[key]}")
    lines.append(f"- system prompt: {settings['system_prompt']!r}")
    lines.append(f"- backend: {json.dumps(settings['backend'])}")
    data = results["data"]
    lines += ["", "## Data", ""]
    for source in data["sources"]:
        lines.append(
            f"- `{source['source']}`: {source['rows']} rows, {source['rows_in_evaluated_problems']} in the evaluated "
            f"problems; skipped rows: "
            f"{source['skipped_rows'] or 'none'}; problems not selected: {source['problems_not_selected'] or 'none'}"
        )
        if source["notes"]:
            lines.append(f"  notes: {source['notes']}")
    verifier = results.get("verifier", {})
    lines.append(f"- verifier time-outs (scored wrong): {verifier.get('timeouts', 0)}")
    return "\n".join(lines) + "\n"


def render_compare_markdown(results_list: Sequence[Mapping[str, Any]], baseline: int | str = 0) -> str:
    """Several runs side by side: a Table 1 with one row per run, then benchmarks as rows with one column per
    run and a Δ column (percentage points; tokens for length) against the baseline run."""
    if not results_list:
        raise ValueError("Nothing to compare.")
    labels = [_label(results) for results in results_list]
    if isinstance(baseline, str) and not baseline.isdigit():
        if baseline not in labels:
            raise ValueError(f"Baseline {baseline!r} is none of the labels {labels}.")
        base_index = labels.index(baseline)
    else:
        base_index = int(baseline)
        if not 0 <= base_index < len(results_list):
            raise ValueError(f"Baseline index {base_index} is out of range for {len(results_list)} result files.")
    base = results_list[base_index]
    keys = []
    for results in results_list:
        keys += [key for key in results["benchmarks"] if key not in keys]
    keys = [k for k in BENCHMARKS if k in keys] + [k for k in keys if k not in BENCHMARKS]

    def accuracy(results, key):
        if key.startswith("@"):
            return results["groups"][key[1:]]["accuracy"]
        return results["benchmarks"].get(key, {}).get("accuracy")

    def name(key):
        return GROUPS[key[1:]][0] if key.startswith("@") else _benchmark_name(results_list, key)

    rows = (
        [k for k in keys if k in GROUPS["math"][1]] + ["@math"] + [k for k in keys if k in GROUPS["ood"][1]] + ["@ood"]
    )
    rows += [k for k in keys if k not in BENCHMARKS]
    headers = ["Benchmark", f"{labels[base_index]} (baseline)"]
    for index, label in enumerate(labels):
        if index != base_index:
            headers += [label, "Δ"]
    lines = ["| " + " | ".join(headers) + " |", "|---|" + "---:|" * (len(headers) - 1)]

    def delta(value, reference, scale=100.0, digits=1):
        if value is None or reference is None:
            return "–"
        return f"{scale * (value - reference):+.{digits}f}"

    for key in rows:
        reference = accuracy(base, key)
        cells = [name(key), _percent_cell(reference)]
        for index, results in enumerate(results_list):
            if index != base_index:
                value = accuracy(results, key)
                cells += [_percent_cell(value), delta(value, reference)]
        lines.append("| " + " | ".join(cells) + " |")
    reference = base["overall"]["mean_length"]
    cells = ["Mean length (tokens)", "–" if reference is None else f"{reference:.1f}"]
    for index, results in enumerate(results_list):
        if index != base_index:
            value = results["overall"]["mean_length"]
            cells += ["–" if value is None else f"{value:.1f}", delta(value, reference, 1.0, 1)]
    lines.append("| " + " | ".join(cells) + " |")
    text = "# Comparison\n\n## Table 1\n\n" + render_table1_markdown(results_list)
    text += "\n## Side by side (accuracy %, Δ in points vs the baseline)\n\n" + "\n".join(lines) + "\n"
    differing = _differing_settings(results_list)
    if differing:
        text += "\nSettings that differ between runs: " + "; ".join(differing) + "\n"
    return text


def _differing_settings(results_list: Sequence[Mapping[str, Any]]) -> list[str]:
    keys = ("num_samples", "temperature", "top_p", "max_new_tokens", "system_prompt", "expand_repeats")
    differing = []
    for key in keys:
        values = [results.get("settings", {}).get(key) for results in results_list]
        if any(value != values[0] for value in values):
            differing.append(f"{key} = " + ", ".join(repr(value) for value in values))
    return differing


def plot_pass_at_k(results_list: Sequence[Mapping[str, Any]], path: str | os.PathLike) -> Path:
    """PNG of pass@k curves: one panel per benchmark, one line per run (x: k on a log2 axis, y: pass@k in %)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    if not results_list:
        raise ValueError("No results to plot.")
    keys: list[str] = []
    for results in results_list:
        keys += [key for key, b in results["benchmarks"].items() if key not in keys and b["pass_at_k"]]
    keys = [k for k in BENCHMARKS if k in keys] + [k for k in keys if k not in BENCHMARKS]
    if not keys:
        raise ValueError("The results hold no pass@k values to plot.")
    columns = min(3, len(keys))
    rows = math.ceil(len(keys) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.4 * rows), squeeze=False)
    for panel, key in enumerate(keys):
        axis = axes[panel // columns][panel % columns]
        title, top, ticks = key, 0.0, set()
        for results in results_list:
            b = results["benchmarks"].get(key)
            if not b:
                continue
            title = f"{b['name']} ({b['metric']})" if len(results_list) == 1 else b["name"]
            points = sorted((int(k), v) for k, v in b["pass_at_k"].items() if v is not None)
            if points:
                values = [100 * v for _, v in points]
                axis.plot([k for k, _ in points], values, marker="o", label=_label(results))
                top = max(top, *values)
                ticks.update(k for k, _ in points)
        axis.set_xscale("log", base=2)
        if ticks:
            axis.set_xticks(sorted(ticks))
            axis.set_xticklabels([str(k) for k in sorted(ticks)])
            axis.set_xlim(min(ticks) / 1.3, max(ticks) * 1.3)
        upper = min(100.0, max(10.0, top * 1.15))
        axis.set_ylim(-0.03 * upper, 1.03 * upper)  # curves at 0 % and 100 % stay visible
        axis.set_title(title)
        axis.set_xlabel("k")
        axis.set_ylabel("pass@k (%)")
        axis.grid(True, alpha=0.3)
        axis.legend(fontsize=8, loc="best")
    for panel in range(len(keys), rows * columns):
        axes[panel // columns][panel % columns].axis("off")
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def write_generations_jsonl(samples: Iterable[Mapping[str, Any]], path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for sample in samples:
            handle.write(json.dumps(sample, ensure_ascii=False) + "\n")
    return path


def load_results(path: str | os.PathLike) -> dict[str, Any]:
    """Read a results JSON written by :func:`write_report` (a run directory holding one works too)."""
    path = Path(path)
    if path.is_dir():
        path = path / RESULTS_FILE
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise FileNotFoundError(
            f"No results file at {path} (expected the {RESULTS_FILE} of an evaluation run)."
        ) from error
    if not isinstance(results, dict) or "benchmarks" not in results or "groups" not in results:
        raise ValueError(f"{path} is not an evaluation results file (no 'benchmarks'/'groups').")
    return results


def write_report(output: EvaluationOutput, output_dir: str | os.PathLike, plot: bool = True) -> dict[str, Path]:
    """Write ``results.json``, ``results.md``, ``generations.jsonl`` and (if ``plot``) ``pass_at_k.png``."""
    directory = Path(output_dir)
    directory.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": directory / RESULTS_FILE,
        "markdown": directory / MARKDOWN_FILE,
        "generations": directory / GENERATIONS_FILE,
    }
    paths["json"].write_text(json.dumps(output.results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    paths["markdown"].write_text(render_results_markdown(output.results), encoding="utf-8")
    write_generations_jsonl(output.samples, paths["generations"])
    if plot:
        paths["plot"] = plot_pass_at_k([output.results], directory / PLOT_FILE)
    return paths
