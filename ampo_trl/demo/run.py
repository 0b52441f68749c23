"""One demo run inside the train script (``demo: true``): the student, the RL data, held-out accuracy before and
after (greedy, and pass@k at temperature 1), the summary, ``demo_summary.json`` (the run's result file, read by the
sweep tool) and the plot. With ``demo_sft: true`` the same run trains the student by supervised learning on the pool
instead of RL (`ampo_trl.demo.sft`)."""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..answers import SYSTEM_PROMPT
from ..reporting import format_duration, format_percent, mean
from .task import TASK_VERSION, DemoTask, train_rows
from .warmup import WarmupSettings, _warmup_once

if TYPE_CHECKING:  # pragma: no cover
    from transformers import PreTrainedModel, Trainer
    from trl import ModelConfig

    from ..cli.arguments import AMPOScriptArguments
    from ..config import AMPOConfig

#: The run's result file in ``output_dir`` (one per run; the sweep tool reads it).
SUMMARY_FILE = "demo_summary.json"
SUMMARY_FORMAT = 2
#: Logged series kept in the result file as learning curves (``[[step, value], ...]``).
CURVE_KEYS = (
    "demo/heldout_hard",
    "demo/heldout_easy",
    "demo/accuracy_hard",
    "demo/accuracy_easy",
    "reward",
    "ampo/replaced_row_fraction",
    "ampo/all_fail_fraction",
    "entropy",
    "loss",
)


@dataclass
class DemoRun:
    """State of one demo run inside `scripts/train.py` (see :func:`prepare`)."""

    task: DemoTask
    warmup: WarmupSettings
    model_path: Path
    warmup_cached: bool
    warmup_seconds: float
    train_dataset: object
    tokenizer: object
    system_prompt: str | None = None
    plot: bool = True
    sft: bool = False
    eval_steps: int = 0
    pass_at_k_samples: int = 32
    before: dict[str, float] = field(default_factory=dict)
    after: dict[str, float] = field(default_factory=dict)
    pass_at_k: dict[str, dict[str, float]] = field(default_factory=dict)
    rl_started: float | None = None

    def evaluate(self, model: PreTrainedModel) -> dict[str, float]:
        """Greedy held-out accuracy on the easy and the hard problems."""
        from .heldout import greedy_accuracy

        return {
            "easy": greedy_accuracy(model, self.tokenizer, self.task.eval_easy, self.system_prompt),
            "hard": greedy_accuracy(model, self.tokenizer, self.task.eval_hard, self.system_prompt),
        }

    def evaluate_pass_at_k(self, model: PreTrainedModel, seed: int) -> dict[str, float] | None:
        """pass@k for k = 1..``pass_at_k_samples`` on the held-out hard problems (None when switched off)."""
        from .heldout import pass_at_k_curve

        if not self.pass_at_k_samples:
            return None
        return pass_at_k_curve(
            model, self.tokenizer, self.task.eval_hard, self.pass_at_k_samples, seed, self.system_prompt
        )

    def callbacks(self) -> list:
        """Trainer callbacks of the run: the held-out learning curve when ``demo_eval_steps`` is set."""
        from .heldout import HeldOutCurve

        return [HeldOutCurve(self.evaluate, self.eval_steps)] if self.eval_steps else []

    def _measure(self, trainer: Trainer, when: str) -> dict[str, float]:
        model = trainer.accelerator.unwrap_model(trainer.model)
        accuracy = self.evaluate(model)
        curve = self.evaluate_pass_at_k(model, seed=trainer.args.seed)
        if curve is not None:
            self.pass_at_k[when] = curve
        passed = (
            f", pass@1 {format_percent(curve['1'])} / pass@{self.pass_at_k_samples} "
            f"{format_percent(curve[str(self.pass_at_k_samples)])} on hard (temperature 1)"
            if curve
            else ""
        )
        trainer.accelerator.print(
            f"[demo] held-out accuracy {when} training: easy {format_percent(accuracy['easy'])}, "
            f"hard {format_percent(accuracy['hard'])} (greedy){passed}"
        )
        return accuracy

    def before_training(self, trainer: Trainer) -> None:
        self.before = self._measure(trainer, "before")
        self.rl_started = time.time()

    def after_training(self, trainer: Trainer, started: float) -> str:
        rl_seconds = time.time() - (self.rl_started or started)
        self.after = self._measure(trainer, "after")
        # The trainer starts a fresh state in train(): the step-0 point is added now, at the front of the history.
        history = trainer.state.log_history
        history.insert(0, {"step": 0, **{f"demo/heldout_{level}": value for level, value in self.before.items()}})
        history.append(
            {
                "step": trainer.state.global_step,
                **{f"demo/heldout_{level}": value for level, value in self.after.items()},
            }
        )
        label = run_label(trainer.args, self.sft)
        text = summary_text(self, trainer, rl_seconds, time.time() - started)
        trainer.accelerator.print(text)
        if self.plot and trainer.is_world_process_zero():
            path = Path(trainer.args.output_dir) / "demo_plot.png"
            plot_history(trainer.state.log_history, path, title=label)
            trainer.accelerator.print(f"[demo] plot written to {path}")
        if trainer.is_world_process_zero():
            summary = self.summary(trainer, label, rl_seconds, time.time() - started)
            write_json_atomic(Path(trainer.args.output_dir) / SUMMARY_FILE, summary)
        return text

    def summary(self, trainer: Trainer, label: str, rl_seconds: float, total_seconds: float) -> dict[str, Any]:
        """The run's result file: settings, warm-up identity, accuracies, pass@k, learning curves, guidance stats."""
        args = trainer.args
        history = trainer.state.log_history
        return {
            "format": SUMMARY_FORMAT,
            "method": label,
            "settings": {
                "demo_sft": self.sft,
                "guidance_trigger": getattr(args, "guidance_trigger", None),
                "num_replacements": getattr(args, "num_replacements", None),
                "guidance_selection": getattr(args, "guidance_selection", None),
                "off_policy_aggregation": getattr(args, "off_policy_aggregation", None),
                "learning_rate": args.learning_rate,
                "max_steps": args.max_steps,
                "seed": args.seed,
                "demo_seed": self.warmup.seed,
            },
            "task_version": TASK_VERSION,
            "warmup": {"key": self.warmup.key(), "path": str(self.model_path), "cached": self.warmup_cached},
            "eval_problems": {"easy": len(self.task.eval_easy), "hard": len(self.task.eval_hard)},
            "before": self.before,
            "after": self.after,
            "pass_at_k": {"samples": self.pass_at_k_samples, "temperature": 1.0, **self.pass_at_k},
            "curves": {key: [[step, value] for step, value in zip(*_series(history, key))] for key in CURVE_KEYS},
            "rl_seconds": round(rl_seconds, 1),
            "total_seconds": round(total_seconds, 1),
            # CPU time of this process (user + system, all threads) since it started: on a shared machine the
            # wall-clock times above depend on the other jobs, this does much less.
            "cpu_seconds": round(time.process_time(), 1),
            **history_stats(history),
            "steps": trainer.state.global_step,
            "guidance_trigger": getattr(args, "guidance_trigger", None),
        }


def write_json_atomic(path: Path, payload: Any) -> Path:
    """Write JSON to a temporary sibling and rename it: a reader never sees a half-written result file."""
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(payload, indent=2))
    os.replace(tmp, path)
    return path


def warmup_settings(script_args: AMPOScriptArguments) -> WarmupSettings:
    """The warm-up a run with these script arguments uses (its cache key decides which student it starts from)."""
    return WarmupSettings(
        steps=script_args.demo_warmup_steps,
        learning_rate=script_args.demo_warmup_learning_rate,
        batch_size=script_args.demo_warmup_batch_size,
        hard_fraction=script_args.demo_warmup_hard_fraction,
        style=script_args.demo_warmup_style,
        seed=script_args.demo_seed,
        eval_problems=script_args.demo_eval_problems,
        system_prompt=_system_prompt(script_args),
    )


def _system_prompt(script_args: AMPOScriptArguments) -> str | None:
    return SYSTEM_PROMPT if script_args.use_ampo_system_prompt else script_args.system_prompt


def prepare(script_args: AMPOScriptArguments, training_args: AMPOConfig, model_args: ModelConfig) -> DemoRun:
    """Build the demo's student (cached warm-up), tokenizer and RL dataset; point ``model_args`` at the student."""
    from datasets import Dataset
    from transformers import AutoTokenizer

    if model_args.model_name_or_path not in (None, "tiny"):
        raise ValueError(
            f"demo: true trains the built-in tiny student; set model_name_or_path: tiny (got "
            f"{model_args.model_name_or_path!r}), or drop demo: true to train your own model."
        )
    if script_args.dataset_name or script_args.dataset_files:
        raise ValueError("demo: true builds its own dataset; remove dataset_name / dataset_files from the recipe.")
    system_prompt = _system_prompt(script_args)
    settings = warmup_settings(script_args)
    started = time.time()
    path, cached = _warmup_once(settings)
    seconds = time.time() - started
    from accelerate import PartialState

    if PartialState().is_main_process:
        state = "loaded from cache" if cached else f"trained in {seconds:.0f}s"
        print(f"[demo] student warm-up ({settings.steps} supervised steps on easy problems): {state}: {path}")
    model_args.model_name_or_path = str(path)
    task = DemoTask(eval_problems=settings.eval_problems, seed=settings.seed)
    rows = train_rows(
        task,
        script_args.demo_train_prompts,
        script_args.demo_hard_fraction,
        seed=script_args.demo_seed,
        system_prompt=system_prompt,
        teachers=script_args.pool_teachers,
    )
    if script_args.max_train_samples is not None:
        rows = rows[: script_args.max_train_samples]
    return DemoRun(
        task=task,
        warmup=settings,
        model_path=path,
        warmup_cached=cached,
        warmup_seconds=seconds,
        train_dataset=Dataset.from_list(rows),
        tokenizer=AutoTokenizer.from_pretrained(path),
        system_prompt=system_prompt,
        plot=script_args.demo_plot,
        sft=script_args.demo_sft,
        eval_steps=script_args.demo_eval_steps,
        pass_at_k_samples=script_args.demo_pass_at_k_samples,
    )


def run_label(args, sft: bool = False) -> str:
    """The method of a demo run as the summary, the plot and the sweep tables name it."""
    if sft:
        return "SFT on the teacher pool"
    trigger = args.guidance_trigger
    if trigger == "never":
        return "GRPO (guidance off)"
    label = "LUFFY-style" if trigger == "every_group" else "AMPO"
    return (
        f"{label} (trigger={trigger}, k={args.num_replacements}, selection={args.guidance_selection}, "
        f"aggregation={args.off_policy_aggregation})"
    )


def _series(log_history: Sequence[dict], key: str) -> tuple[list[int], list[float]]:
    steps, values = [], []
    for entry in log_history:
        value = entry.get(key)
        if value is not None and "step" in entry and not (isinstance(value, float) and math.isnan(value)):
            steps.append(entry["step"])
            values.append(float(value))
    return steps, values


def history_stats(log_history: Sequence[dict]) -> dict:
    """Averages over the run of the logged guidance metrics, and the per-teacher selection shares."""
    stats = {}
    for key, name in (
        ("ampo/replaced_row_fraction", "replaced_row_fraction"),
        ("ampo/all_fail_fraction", "all_fail_fraction"),
        ("frac_reward_zero_std", "zero_std_group_fraction"),
        ("reward", "reward"),
        ("demo/accuracy_easy", "accuracy_easy"),
        ("demo/accuracy_hard", "accuracy_hard"),
    ):
        _, values = _series(log_history, key)
        stats[name] = mean(values)
        if len(values) >= 4:
            quarter = max(1, len(values) // 4)
            stats[f"{name}_first_quarter"] = mean(values[:quarter])
            stats[f"{name}_last_quarter"] = mean(values[-quarter:])
    replaced = {}
    for entry in log_history:
        rows = entry.get("ampo/replaced_rows")
        for key, share in entry.items():
            if key.startswith("ampo/teacher_share/") and rows and share == share:  # share == share: not NaN
                replaced[key.rsplit("/", 1)[-1]] = replaced.get(key.rsplit("/", 1)[-1], 0.0) + share * rows
    total = sum(replaced.values())
    stats["teachers_chosen"] = {name: count / total for name, count in sorted(replaced.items())} if total else {}
    return stats


def summary_text(run: DemoRun, trainer: Trainer, rl_seconds: float, total_seconds: float) -> str:
    args = trainer.args
    stats = history_stats(trainer.state.log_history)
    before, after = run.before, run.after
    lines = [
        "=" * 78,
        f"CPU demo summary: {run_label(args, run.sft)}",
        f"held-out accuracy (greedy; {len(run.task.eval_easy)} easy / {len(run.task.eval_hard)} hard problems):",
        f"  easy  {format_percent(before.get('easy'))} -> {format_percent(after.get('easy'))}",
        f"  hard  {format_percent(before.get('hard'))} -> {format_percent(after.get('hard'))}",
    ]
    if run.pass_at_k.get("after"):
        n = str(run.pass_at_k_samples)
        first, last = run.pass_at_k.get("before") or {}, run.pass_at_k["after"]
        lines.append(
            f"pass@k on hard ({n} samples at temperature 1): pass@1 {format_percent(first.get('1'))} -> "
            f"{format_percent(last['1'])}, pass@{n} {format_percent(first.get(n))} -> {format_percent(last[n])}"
        )
    if run.sft:
        lines.append(
            f"SFT steps: {trainer.state.global_step} x {args.per_device_train_batch_size * args.world_size} "
            f"(prompt, teacher solution) pairs, lr {args.learning_rate:g}"
        )
    else:
        lines.append(
            f"RL steps: {trainer.state.global_step} x {args.generation_batch_size // args.num_generations} prompts x "
            f"{args.num_generations} completions, lr {args.learning_rate:g}"
        )
    lines.append(
        f"time: {'SFT' if run.sft else 'RL'} {format_duration(rl_seconds)}, whole run "
        f"{format_duration(total_seconds)} (warm-up "
        + ("cached" if run.warmup_cached else f"{run.warmup_seconds:.0f}s")
        + ")"
    )
    for key, label in (
        ("accuracy_hard", "sampled accuracy on hard training prompts"),
        ("accuracy_easy", "sampled accuracy on easy training prompts"),
        ("all_fail_fraction", "groups where all samples failed"),
    ):
        if stats.get(key) is None:
            continue
        first, last = stats.get(f"{key}_first_quarter"), stats.get(f"{key}_last_quarter")
        if first is not None and last is not None:
            lines.append(
                f"{label}: {format_percent(first)} (first quarter of steps) -> {format_percent(last)} (last quarter)"
            )
        else:
            lines.append(f"{label}: {format_percent(stats[key])} on average")
    if stats.get("zero_std_group_fraction") is not None:
        lines.append(
            "groups with zero reward spread (no GRPO gradient): "
            f"{format_percent(stats.get('zero_std_group_fraction'))} of groups on average"
        )
    if run.sft:
        lines.append("teacher rows: every training row (supervised, no sampling)")
    elif args.guidance_trigger != "never":
        lines.append(
            f"replacement rate: {format_percent(stats.get('replaced_row_fraction'))} of completions were teacher rows"
        )
        chosen = stats.get("teachers_chosen") or {}
        shares = ", ".join(f"{name} {format_percent(share)}" for name, share in chosen.items()) or "none"
        lines.append(f"teachers chosen: {shares}")
    else:
        lines.append("replacement rate: 0% (guidance off)")
    lines.append("=" * 78)
    return "\n".join(lines)


PLOT_PANELS = (
    ("reward", "reward (on-policy rows)", ()),
    ("ampo/replaced_row_fraction", "replaced row fraction", ("ampo/all_fail_fraction",)),
    ("entropy", "entropy (nats/token)", ()),
    ("demo/accuracy_hard", "sampled accuracy on training prompts", ("demo/accuracy_easy",)),
    ("demo/heldout_hard", "held-out accuracy (greedy)", ("demo/heldout_easy",)),
)
SFT_PLOT_PANELS = (
    ("loss", "loss (teacher tokens)", ()),
    ("demo/heldout_hard", "held-out accuracy (greedy)", ("demo/heldout_easy",)),
)


def plot_history(log_history: Sequence[dict], path: str | os.PathLike, title: str = "") -> Path:
    """PNG of the logged curves over training steps (matplotlib, Agg backend): reward, replacement rate, entropy,
    sampled and held-out accuracy for RL runs; loss and held-out accuracy for the SFT baseline (no reward logged)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rl = any("reward" in entry for entry in log_history)
    panels = PLOT_PANELS if rl else SFT_PLOT_PANELS
    figure, axes = plt.subplots(1, len(panels), figsize=(3.5 * len(panels) + 0.5, 3.6))
    for axis, (key, label, extras) in zip(axes, panels):
        lines = 0
        for series_key, style in ((key, "-"), *((extra, "--") for extra in extras)):
            steps, values = _series(log_history, series_key)
            if steps:
                axis.plot(
                    steps,
                    values,
                    linestyle=style,
                    marker="." if len(steps) < 20 else None,
                    label=series_key.split("/")[-1],
                )
                lines += 1
        if lines == 0:
            axis.text(0.5, 0.5, "not logged", ha="center", va="center", transform=axis.transAxes)
        elif extras:
            axis.legend(fontsize=8)
        axis.set_title(label)
        axis.set_xlabel("step")
        axis.grid(alpha=0.3)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
