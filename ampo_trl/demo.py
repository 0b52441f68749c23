"""The embedded CPU demo: a tiny student, an easy/hard addition task, three synthetic teachers.

What it reproduces, in miniature, is the paper's setting: an instruct student that solves easy problems and fails
hard ones, a pool of verified solutions written by several teachers with different styles, and RL on a mix of both.

* **Task.** ``a+b`` with two-digit ``a`` and ``b``. *Easy*: the sum is below 100 (the student's warm-up covers
  them). *Hard*: the sum is 100 or more, so the tens column carries into a third digit. Problems are split
  deterministically into held-out evaluation sets (``eval_problems`` per difficulty) and training problems.
* **Teachers.** Every problem's pool holds one solution per teacher, all correct, in different styles:
  ``column`` (ones column, carry, tens column), ``tens_first`` (tens and ones separately, then the sum) and
  ``terse`` (only the answer). Answers are in ``<answer>…</answer>``.
* **Student.** The offline tiny model (`ampo_trl.tiny`) after a short supervised warm-up (plain PyTorch, cached on
  disk, well under a minute) on *easy* problems written in one style (``column`` by default), with a small share of
  hard ones (``warmup_hard_fraction``, 1% by default) so that, like an instruct model, it has a weak prior on them:
  it solves nearly all easy problems and only rarely a hard one.
* **RL.** `AMPOTrainer` on a mix of easy and hard training prompts. Hard problems usually fail for all G samples;
  GRPO gets no gradient from such groups, AMPO replaces failed rows with teacher solutions.

:func:`prepare` builds all of this for `scripts/train.py` (``demo: true`` in the recipe); `DemoRun` measures held-out
accuracy before and after, prints the summary and writes the plot (:func:`plot_history`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import re
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger("ampo_trl.demo")

TASK_VERSION = 1  # bump when problems, teacher texts or the warm-up change (invalidates cached warm-ups)
_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.S)


# ---------------------------------------------------------------------------------------------------------- task
@dataclass(frozen=True)
class Problem:
    a: int
    b: int

    @property
    def answer(self) -> str:
        return str(self.a + self.b)

    @property
    def hard(self) -> bool:
        return self.a + self.b >= 100

    @property
    def question(self) -> str:
        return f"{self.a}+{self.b}"


def column_solution(p: Problem) -> str:
    """Ones column, carry, tens column: ``7+5=12, carry 1. 3+2+1=6. <answer>62</answer>``."""
    a0, a1, b0, b1 = p.a % 10, p.a // 10, p.b % 10, p.b // 10
    ones = a0 + b0
    carry = ones // 10
    first = f"{a0}+{b0}={ones}" + (", carry 1." if carry else ".")
    second = f"{a1}+{b1}" + ("+1" if carry else "") + f"={a1 + b1 + carry}."
    return f"{first} {second} <answer>{p.answer}</answer>"


def tens_first_solution(p: Problem) -> str:
    """Tens and ones separately, then their sum: ``30+20=50, 7+5=12, 50+12=62. <answer>62</answer>``."""
    tens = (p.a // 10 + p.b // 10) * 10
    ones = p.a % 10 + p.b % 10
    return (
        f"{p.a // 10 * 10}+{p.b // 10 * 10}={tens}, {p.a % 10}+{p.b % 10}={ones}, {tens}+{ones}={p.a + p.b}. "
        f"<answer>{p.answer}</answer>"
    )


def terse_solution(p: Problem) -> str:
    """Only the answer: ``<answer>62</answer>``."""
    return f"<answer>{p.answer}</answer>"


TEACHERS: dict[str, Callable[[Problem], str]] = {
    "column": column_solution,
    "tens_first": tens_first_solution,
    "terse": terse_solution,
}


def prompt_messages(problem: Problem, system_prompt: str | None = None) -> list[dict]:
    messages = [{"role": "user", "content": problem.question}]
    if system_prompt:
        messages.insert(0, {"role": "system", "content": system_prompt})
    return messages


@dataclass(frozen=True)
class DemoTask:
    """Deterministic split of all two-digit additions into train / held-out sets, per difficulty."""

    eval_problems: int = 200
    seed: int = 0

    def _split(self, hard: bool) -> tuple[list[Problem], list[Problem]]:
        problems = [Problem(a, b) for a in range(10, 100) for b in range(10, 100) if Problem(a, b).hard == hard]
        random.Random(f"{self.seed}-{hard}").shuffle(problems)
        if self.eval_problems >= len(problems):
            raise ValueError(f"eval_problems={self.eval_problems} leaves no training problems.")
        return problems[self.eval_problems :], problems[: self.eval_problems]

    @property
    def train_easy(self) -> list[Problem]:
        return self._split(False)[0]

    @property
    def train_hard(self) -> list[Problem]:
        return self._split(True)[0]

    @property
    def eval_easy(self) -> list[Problem]:
        return self._split(False)[1]

    @property
    def eval_hard(self) -> list[Problem]:
        return self._split(True)[1]


def pool(problem: Problem, teachers: Sequence[str] | None = None) -> list[dict]:
    names = list(teachers) if teachers else list(TEACHERS)
    return [{"teacher": name, "text": TEACHERS[name](problem)} for name in names]


def train_rows(
    task: DemoTask,
    num_prompts: int,
    hard_fraction: float,
    seed: int = 0,
    system_prompt: str | None = None,
    teachers: Sequence[str] | None = None,
) -> list[dict]:
    """RL prompts in the canonical schema (``prompt``, ``answer``, ``teacher_solutions``, plus ``difficulty``)."""
    rng = random.Random(f"rl-{seed}")
    easy, hard = task.train_easy, task.train_hard
    rows = []
    for _ in range(num_prompts):
        problem = rng.choice(hard) if rng.random() < hard_fraction else rng.choice(easy)
        rows.append(
            {
                "prompt": prompt_messages(problem, system_prompt),
                "answer": problem.answer,
                "teacher_solutions": pool(problem, teachers),
                "difficulty": "hard" if problem.hard else "easy",
            }
        )
    return rows


def exact_answer_reward(completions, answer, difficulty=None, log_metric=None, **kwargs) -> list[float]:
    """1.0 iff the last ``<answer>…</answer>`` equals the gold integer (the exact verifier for this task).

    In a trainer, also logs the sampled accuracy on easy and hard prompts (``demo/accuracy_easy`` /
    ``demo/accuracy_hard``) through TRL's ``log_metric``, when the rows carry a ``difficulty`` column.
    """
    rewards = []
    for completion, gold in zip(completions, answer):
        text = completion[-1]["content"] if isinstance(completion, list) else completion
        found = _ANSWER.findall(text)
        rewards.append(1.0 if found and found[-1].strip() == str(gold).strip() else 0.0)
    if log_metric is not None and difficulty is not None:
        for level in ("easy", "hard"):
            values = [reward for reward, row_level in zip(rewards, difficulty) if row_level == level]
            if values:
                log_metric(f"demo/accuracy_{level}", sum(values) / len(values))
    return rewards


# ------------------------------------------------------------------------------------------------------- warm-up
@dataclass(frozen=True)
class WarmupSettings:
    steps: int = 400
    learning_rate: float = 3e-3
    batch_size: int = 32
    hard_fraction: float = 0.01
    style: str = "column"
    seed: int = 0
    eval_problems: int = 200
    system_prompt: str | None = None

    def key(self) -> str:
        from .tiny import DEFAULT_MODEL_CONFIG

        payload = {"task": TASK_VERSION, "model": DEFAULT_MODEL_CONFIG, **self.__dict__}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]


def _encode(tokenizer, problem: Problem, text: str, system_prompt: str | None) -> tuple[list[int], list[int]]:
    prompt = tokenizer.apply_chat_template(
        prompt_messages(problem, system_prompt), add_generation_prompt=True, tokenize=False
    )
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    completion_ids = tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return prompt_ids, completion_ids


def supervised_warmup(settings: WarmupSettings, log_every: int = 50):
    """Train the tiny model on teacher solutions of easy problems (plus ``hard_fraction`` hard ones).

    Plain PyTorch: AdamW, linear warm-up and decay, loss on completion tokens only. Returns ``(model, tokenizer)``.
    """
    import torch

    from .tiny import build_tiny_model_and_tokenizer

    if settings.style not in TEACHERS:
        raise ValueError(f"demo warm-up style must be one of {list(TEACHERS)}, got {settings.style!r}.")
    task = DemoTask(eval_problems=settings.eval_problems, seed=settings.seed)
    easy, hard = task.train_easy, task.train_hard
    rng = random.Random(f"warmup-{settings.seed}")
    model, tokenizer = build_tiny_model_and_tokenizer(seed=settings.seed)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.learning_rate, weight_decay=0.0)
    warmup = max(1, settings.steps // 20)

    def schedule(step):
        return min(1.0, (step + 1) / warmup) * max(0.0, 1.0 - step / settings.steps)

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    teacher = TEACHERS[settings.style]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        for step in range(settings.steps):
            items = []
            for _ in range(settings.batch_size):
                problem = rng.choice(hard) if rng.random() < settings.hard_fraction else rng.choice(easy)
                items.append(_encode(tokenizer, problem, teacher(problem), settings.system_prompt))
            length = max(len(p) + len(c) for p, c in items)
            input_ids = torch.full((len(items), length), tokenizer.pad_token_id)
            attention = torch.zeros((len(items), length), dtype=torch.long)
            labels = torch.full((len(items), length), -100)
            for row, (prompt_ids, completion_ids) in enumerate(items):
                ids = prompt_ids + completion_ids
                input_ids[row, : len(ids)] = torch.tensor(ids)
                attention[row, : len(ids)] = 1
                labels[row, len(prompt_ids) : len(ids)] = torch.tensor(completion_ids)
            loss = model(input_ids=input_ids, attention_mask=attention, labels=labels).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            if log_every and (step % log_every == 0 or step == settings.steps - 1):
                logger.info("demo warm-up step %d/%d: loss %.4f", step + 1, settings.steps, loss.item())
    model.eval()
    return model, tokenizer


def warmed_up_model_path(settings: WarmupSettings, cache_dir: str | os.PathLike | None = None) -> tuple[Path, bool]:
    """Directory of the warmed-up student for ``settings`` (built on first use). Returns ``(path, was_cached)``."""
    from .tiny import default_cache_dir

    path = Path(cache_dir or default_cache_dir()) / f"demo-student-{settings.key()}"
    if (path / "config.json").exists() and (path / "tokenizer_config.json").exists():
        return path, True
    started = time.time()
    model, tokenizer = supervised_warmup(settings)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / "demo_warmup.json").write_text(
        json.dumps({**settings.__dict__, "seconds": round(time.time() - started, 1)}, indent=2)
    )
    try:
        os.replace(tmp, path)
    except OSError:  # another process finished first: keep its copy
        shutil.rmtree(tmp, ignore_errors=True)
    return path, False


# ---------------------------------------------------------------------------------------------------- evaluation
def accuracy(model, tokenizer, problems: Sequence[Problem], system_prompt=None, max_new_tokens=64, batch_size=256):
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


# --------------------------------------------------------------------------------------------------- the run
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

    def evaluate(self, model) -> dict[str, float]:
        model = getattr(model, "module", model)
        return {
            "easy": accuracy(model, self.tokenizer, self.task.eval_easy, self.system_prompt),
            "hard": accuracy(model, self.tokenizer, self.task.eval_hard, self.system_prompt),
        }

    def before_training(self, trainer) -> None:
        self.before = self.evaluate(trainer.accelerator.unwrap_model(trainer.model))
        trainer.accelerator.print(
            f"[demo] held-out accuracy before RL: easy {_pct(self.before['easy'])}, hard {_pct(self.before['hard'])}"
        )
        self.rl_started = time.time()

    def after_training(self, trainer, started: float) -> str:
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


def prepare(script_args, training_args, model_args) -> DemoRun:
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
        from .pool import SYSTEM_PROMPT

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


def _warmup_once(settings: WarmupSettings):
    """Warm up on the main process first (other processes then load the cached result)."""
    from accelerate import PartialState

    state = PartialState()
    with state.main_process_first():
        return warmed_up_model_path(settings)


# ------------------------------------------------------------------------------------------- summary and plot
def _pct(value: float) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.1f}%"


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


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


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
        stats[name] = _mean(values)
        if len(values) >= 4:
            quarter = max(1, len(values) // 4)
            stats[f"{name}_first_quarter"] = _mean(values[:quarter])
            stats[f"{name}_last_quarter"] = _mean(values[-quarter:])
    replaced = {}
    for entry in log_history:
        rows = entry.get("ampo/replaced_rows")
        for key, share in entry.items():
            if key.startswith("ampo/teacher_share/") and rows and share == share:  # share == share: not NaN
                replaced[key.rsplit("/", 1)[-1]] = replaced.get(key.rsplit("/", 1)[-1], 0.0) + share * rows
    total = sum(replaced.values())
    stats["teachers_chosen"] = {name: count / total for name, count in sorted(replaced.items())} if total else {}
    return stats


def summary_text(run: DemoRun, trainer, rl_seconds: float, total_seconds: float) -> str:
    args = trainer.args
    stats = history_stats(trainer.state.log_history)
    before, after = run.before, run.after
    lines = [
        "=" * 78,
        f"CPU demo summary: {_run_label(args)}",
        f"held-out accuracy (greedy; {len(run.task.eval_easy)} easy / {len(run.task.eval_hard)} hard problems):",
        f"  easy  {_pct(before.get('easy'))} -> {_pct(after.get('easy'))}",
        f"  hard  {_pct(before.get('hard'))} -> {_pct(after.get('hard'))}",
        f"RL steps: {trainer.state.global_step} x {args.generation_batch_size // args.num_generations} prompts x "
        f"{args.num_generations} completions, lr {args.learning_rate:g}",
        f"time: RL {_duration(rl_seconds)}, whole run {_duration(total_seconds)} (warm-up "
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
            lines.append(f"{label}: {_pct(first)} (first quarter of steps) -> {_pct(last)} (last quarter)")
        else:
            lines.append(f"{label}: {_pct(stats[key])} on average")
    if stats.get("zero_std_group_fraction") is not None:
        lines.append(
            "groups with zero reward spread (no GRPO gradient): "
            f"{_pct(stats.get('zero_std_group_fraction'))} of groups on average"
        )
    if args.guidance_trigger != "never":
        lines.append(f"replacement rate: {_pct(stats.get('replaced_row_fraction'))} of completions were teacher rows")
        chosen = stats.get("teachers_chosen") or {}
        shares = ", ".join(f"{name} {_pct(share)}" for name, share in chosen.items()) or "none"
        lines.append(f"teachers chosen: {shares}")
    else:
        lines.append("replacement rate: 0% (guidance off)")
    lines.append("=" * 78)
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(int(round(seconds)), 60)
    return f"{minutes}m{seconds:02d}s"


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
