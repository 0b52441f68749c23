"""One demo run inside the train script (``demo: true``): the student, the RL data, held-out accuracy before and
after, the summary and the plot."""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..answers import SYSTEM_PROMPT
from ..reporting import format_duration, format_percent, mean
from .task import AdditionProblem, DemoTask, exact_answer_reward, prompt_messages, train_rows
from .warmup import WarmupSettings, _warmup_once

if TYPE_CHECKING:  # pragma: no cover
    from transformers import PreTrainedModel, PreTrainedTokenizerBase
    from trl import ModelConfig

    from ..cli.arguments import AMPOScriptArguments
    from ..config import AMPOConfig
    from ..trainer import AMPOTrainer


def accuracy(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    problems: Sequence[AdditionProblem],
    system_prompt: str | None = None,
    max_new_tokens: int = 64,
    batch_size: int = 256,
) -> float:
    """Greedy held-out accuracy (fraction of problems whose last ``<answer>`` is the sum), batched."""
    import torch

    if not problems:
        return float("nan")
    was_training = model.training
    model.eval()
    padding_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    correct = 0
    try:
        for start in range(0, len(problems), batch_size):
            chunk = problems[start : start + batch_size]
            texts = [
                tokenizer.apply_chat_template(
                    prompt_messages(p, system_prompt), add_generation_prompt=True, tokenize=False
                )
                for p in chunk
            ]
            encoded = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
            encoded = {key: value.to(model.device) for key, value in encoded.items()}
            with torch.no_grad():
                output = model.generate(
                    **encoded,
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    pad_token_id=tokenizer.pad_token_id,
                    eos_token_id=tokenizer.eos_token_id,
                )
            decoded = tokenizer.batch_decode(output[:, encoded["input_ids"].shape[1] :], skip_special_tokens=True)
            correct += sum(exact_answer_reward(decoded, [p.answer for p in chunk]))
    finally:
        tokenizer.padding_side = padding_side
        if was_training:
            model.train()
    return correct / len(problems)


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
    before: dict[str, float] = field(default_factory=dict)
    after: dict[str, float] = field(default_factory=dict)
    rl_started: float | None = None

    def evaluate(self, model: PreTrainedModel) -> dict[str, float]:
        model = getattr(model, "module", model)
        return {
            "easy": accuracy(model, self.tokenizer, self.task.eval_easy, self.system_prompt),
            "hard": accuracy(model, self.tokenizer, self.task.eval_hard, self.system_prompt),
        }

    def before_training(self, trainer: AMPOTrainer) -> None:
        self.before = self.evaluate(trainer.accelerator.unwrap_model(trainer.model))
        trainer.accelerator.print(
            f"[demo] held-out accuracy before RL: easy {format_percent(self.before['easy'])}, "
            f"hard {format_percent(self.before['hard'])}"
        )
        self.rl_started = time.time()

    def after_training(self, trainer: AMPOTrainer, started: float) -> str:
        rl_seconds = time.time() - (self.rl_started or started)
        self.after = self.evaluate(trainer.accelerator.unwrap_model(trainer.model))
        text = summary_text(self, trainer, rl_seconds, time.time() - started)
        trainer.accelerator.print(text)
        if self.plot and trainer.is_world_process_zero():
            path = Path(trainer.args.output_dir) / "demo_plot.png"
            plot_history(trainer.state.log_history, path, title=_run_label(trainer.args))
            trainer.accelerator.print(f"[demo] plot written to {path}")
        if trainer.is_world_process_zero():
            summary = {
                "before": self.before,
                "after": self.after,
                "rl_seconds": round(rl_seconds, 1),
                **history_stats(trainer.state.log_history),
                "steps": trainer.state.global_step,
                "guidance_trigger": trainer.args.guidance_trigger,
            }
            Path(trainer.args.output_dir, "demo_summary.json").write_text(json.dumps(summary, indent=2))
        return text


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
    system_prompt = script_args.system_prompt
    if script_args.use_ampo_system_prompt:
        system_prompt = SYSTEM_PROMPT
    settings = WarmupSettings(
        steps=script_args.demo_warmup_steps,
        learning_rate=script_args.demo_warmup_learning_rate,
        batch_size=script_args.demo_warmup_batch_size,
        hard_fraction=script_args.demo_warmup_hard_fraction,
        style=script_args.demo_warmup_style,
        seed=script_args.demo_seed,
        eval_problems=script_args.demo_eval_problems,
        system_prompt=system_prompt,
    )
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
    )


def _run_label(args) -> str:
    if args.guidance_trigger == "never":
        return "GRPO (guidance off)"
    return f"AMPO (trigger={args.guidance_trigger}, k={args.num_replacements}, selection={args.guidance_selection})"


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


def summary_text(run: DemoRun, trainer: AMPOTrainer, rl_seconds: float, total_seconds: float) -> str:
    args = trainer.args
    stats = history_stats(trainer.state.log_history)
    before, after = run.before, run.after
    lines = [
        "=" * 78,
        f"CPU demo summary: {_run_label(args)}",
        f"held-out accuracy (greedy; {len(run.task.eval_easy)} easy / {len(run.task.eval_hard)} hard problems):",
        f"  easy  {format_percent(before.get('easy'))} -> {format_percent(after.get('easy'))}",
        f"  hard  {format_percent(before.get('hard'))} -> {format_percent(after.get('hard'))}",
        f"RL steps: {trainer.state.global_step} x {args.generation_batch_size // args.num_generations} prompts x "
        f"{args.num_generations} completions, lr {args.learning_rate:g}",
        f"time: RL {format_duration(rl_seconds)}, whole run {format_duration(total_seconds)} (warm-up "
        + ("cached" if run.warmup_cached else f"{run.warmup_seconds:.0f}s")
        + ")",
    ]
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
    if args.guidance_trigger != "never":
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


def plot_history(log_history: Sequence[dict], path: str | os.PathLike, title: str = "") -> Path:
    """PNG with reward, replacement rate and entropy over training steps (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = (
        ("reward", "reward (on-policy rows)", ()),
        ("ampo/replaced_row_fraction", "replaced row fraction", ("ampo/all_fail_fraction",)),
        ("entropy", "entropy (nats/token)", ()),
        ("demo/accuracy_hard", "sampled accuracy on training prompts", ("demo/accuracy_easy",)),
    )
    figure, axes = plt.subplots(1, len(panels), figsize=(17, 3.6))
    for axis, (key, label, extras) in zip(axes, panels):
        lines = 0
        for series_key, style in ((key, "-"), *((extra, "--") for extra in extras)):
            steps, values = _series(log_history, series_key)
            if steps:
                axis.plot(steps, values, linestyle=style, label=series_key.split("/")[-1])
                lines += 1
        if lines == 0:
            axis.text(0.5, 0.5, "not logged\n(guidance off)", ha="center", va="center", transform=axis.transAxes)
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
