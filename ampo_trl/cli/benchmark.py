r"""AMPO vs GRPO cost on the same machine, in one run: time per step, loss-pass tokens, scoring forwards, peak memory.

Four scenarios, each run in its own subprocess (so peak memory is per scenario) and repeated `--rounds` times in
alternation (so a busy machine slows both trainers alike):

* ``grpo-untriggered`` / ``ampo-untriggered``: every completion is rewarded as correct, so AMPO never triggers;
  this measures the price of AMPO's bookkeeping. Target: ratio <= 1.02.
* ``grpo-triggered`` / ``ampo-triggered``: the paper's rewards (0.9 accuracy + 0.1 format) on a random tiny model
  that never answers correctly, so every group is guided; this measures comprehension scoring, teacher-row
  re-scoring and the longer teacher rows in the loss.

Each generation batch is cut into ``--micro-batches`` micro-batches (gradient accumulation), as in real runs, and
for every loss pass the script counts the *real* completion tokens (unmasked) and the *padded* ones (rows x width of
each micro-batch): padded / real is the waste of padding, real AMPO / real GRPO the extra tokens teacher rows bring.
``--length-grouping`` sets AMPO's `length_grouping` (``never`` reproduces the micro-batches of TRL).

``--cost-model`` trains nothing: it prints AMPO's extra tokens per training step for a setting of your own (defaults:
the paper's 7B run), so the overhead can be predicted before renting GPUs (`cost_model`).

The learning rate is 0 so that both trainers sample exactly the same completions (same seeds, same weights) and
the time difference is AMPO's own work, not a drift in completion lengths. Step times are the median over the
measured steps (the first step, with its warm-up costs, is excluded).

Output: one `name: value` line per ratio (AMPO / GRPO unless said otherwise); the last line is the triggered-step
overhead ratio. Example (2 CPU cores)::

    python scripts/benchmark.py --steps 12 --rounds 2
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

SCENARIOS = ("grpo-untriggered", "ampo-untriggered", "grpo-triggered", "ampo-triggered")


def always_correct(completions: list, **kwargs) -> list[float]:
    return [1.0] * len(completions)


def _dataset(num_prompts: int, teacher_tokens: int):
    from datasets import Dataset

    rows = []
    for i in range(num_prompts * 4):
        a, b = 10 + i, 30 + 2 * i
        answer = str(a + b)
        tail = f"<answer>{answer}</answer>"

        def reasoning(fraction, filler, answer=answer, tail=tail):
            # The tiny tokenizer is byte-level (one token per character) with single-token tags.
            length = max(0, int(fraction * teacher_tokens) - (2 + len(answer)) - 1)
            return (filler * (length // len(filler) + 1))[:length] + " " + tail

        styles = {
            "terse": tail,
            "steps": reasoning(0.6, f"{a}+{b}; "),
            "verbose": reasoning(1.0, "check the columns. "),
            "long": reasoning(0.8, "so "),
        }
        rows.append(
            {
                "prompt": [{"role": "user", "content": f"What is {a}+{b}? Answer in <answer></answer> tags."}],
                "answer": answer,
                "teacher_solutions": [{"teacher": name, "text": text} for name, text in styles.items()],
            }
        )
    return Dataset.from_list(rows)


def cost_model(
    prompts: int = 128,
    generations: int = 8,
    prompt_tokens: int = 150,
    completion_tokens: int = 1268,
    teacher_tokens: int = 3000,
    teachers: int = 4,
    replacements: int = 2,
    trigger_rate: float = 0.3,
) -> dict[str, float]:
    """Tokens per training step: generated, in GRPO's loss pass, and what AMPO adds (all in tokens).

    A triggered group scores its ``teachers`` candidates once (no-grad forward over prompt + teacher solution) and
    swaps ``replacements`` completions for teacher solutions in the loss pass (forward and backward).
    """
    triggered = prompts * trigger_rate
    generated = prompts * generations * completion_tokens
    loss_pass = prompts * generations * (prompt_tokens + completion_tokens)
    scoring = triggered * teachers * (prompt_tokens + teacher_tokens)
    teacher_extra = triggered * replacements * (teacher_tokens - completion_tokens)
    return {
        "generated": generated,
        "loss_pass": loss_pass,
        "scoring": scoring,
        "teacher_extra": teacher_extra,
        "scoring_per_generated": scoring / generated,
        "teacher_extra_per_loss_pass": teacher_extra / loss_pass,
    }


def print_cost_model(args: argparse.Namespace) -> None:
    print(
        f"# {args.step_prompts} prompts x {args.num_generations} completions per step; prompt {args.prompt_tokens}, "
        f"completion {args.completion_tokens}, teacher solution {args.teacher_solution_tokens} tokens; "
        f"{args.teachers} teachers, k = {args.k}"
    )
    print("| trigger rate | generated | GRPO loss pass | AMPO scoring (no-grad) | teacher rows (extra, fwd+bwd) |")
    print("|---|---|---|---|---|")
    for rate in args.trigger_rates:
        cost = cost_model(
            args.step_prompts,
            args.num_generations,
            args.prompt_tokens,
            args.completion_tokens,
            args.teacher_solution_tokens,
            args.teachers,
            args.k,
            rate,
        )
        print(
            f"| {rate:.2f} | {cost['generated'] / 1e6:.2f} M | {cost['loss_pass'] / 1e6:.2f} M | "
            f"{cost['scoring'] / 1e6:.2f} M ({cost['scoring_per_generated']:.0%} of generated) | "
            f"{cost['teacher_extra'] / 1e6:.2f} M (+{cost['teacher_extra_per_loss_pass']:.0%} of the loss pass) |"
        )


#: Phases of a training step timed by the benchmark, outermost first: generation, rewards and (AMPO) guidance;
#: AMPO's guidance alone; its verification of teacher solutions; its comprehension scoring. The loss passes
#: (forward and backward of every micro-batch) are the step time minus the first phase.
TIMED_PHASES = {
    "generate_and_score": "_generate_and_score_completions",
    "guidance": "_apply_guidance",
    "verification": "_verified_candidates",
    "scoring": "_score_candidates",
}


def _measured(trainer_class: type, token_counts: list, phase_times: dict[str, list[float]]) -> type:
    """`trainer_class` recording (real, padded) completion tokens of every generation batch's loss pass, and the
    seconds spent in each of `TIMED_PHASES` per generation batch (phases the class lacks are not recorded)."""
    from ampo_trl.micro_batches import padding_stats

    class Measured(trainer_class):
        def _prepare_inputs(self, generation_batch):
            previous = self._buffered_inputs
            inputs = super()._prepare_inputs(generation_batch)
            if self.model.training and self._buffered_inputs is not previous:
                token_counts.append(padding_stats(self._buffered_inputs))
            return inputs

    def timed(phase: str, method):
        def wrapper(self, *args, **kwargs):
            start = time.perf_counter()
            try:
                return method(self, *args, **kwargs)
            finally:
                if self.model.training:
                    phase_times[phase][-1] += time.perf_counter() - start

        return wrapper

    for phase, name in TIMED_PHASES.items():
        if hasattr(trainer_class, name):
            phase_times.setdefault(phase, [])
            setattr(Measured, name, timed(phase, getattr(trainer_class, name)))
    return Measured


def per_round_ratios(numerator: list[float], denominator: list[float]) -> list[float]:
    """Ratio of the two scenarios' medians in each round (rounds alternate, so each ratio is one fair comparison)."""
    return [n / d for n, d in zip(numerator, denominator, strict=True)]


def run_scenario(args: argparse.Namespace) -> dict:
    """Train one scenario in this process and return its measurements."""
    import torch
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from ampo_trl import AMPOConfig, AMPOTrainer
    from ampo_trl.demo.tiny import build_tiny_model_and_tokenizer
    from ampo_trl.rewards import accuracy_reward, format_reward

    torch.set_num_threads(args.threads)
    trainer_name, trigger = args.worker.split("-")
    use_gpu = torch.cuda.is_available() and not args.cpu
    rows = args.num_prompts * args.num_generations
    if rows % args.micro_batches:
        raise SystemExit(f"--micro-batches={args.micro_batches} must divide {rows} rows per generation batch.")
    common = dict(
        output_dir=tempfile.mkdtemp(prefix="ampo-bench-"),
        per_device_train_batch_size=rows // args.micro_batches,
        gradient_accumulation_steps=args.micro_batches,
        num_generations=args.num_generations,
        max_completion_length=args.max_completion_length,
        max_steps=args.steps + 1,
        learning_rate=0.0,
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        seed=0,
        use_cpu=not use_gpu,
        bf16=use_gpu,
        gradient_checkpointing=False,
        dataloader_num_workers=0,
    )
    if trigger == "untriggered":
        reward_funcs, weights = [always_correct], None
    else:
        reward_funcs, weights = [accuracy_reward, format_reward], [0.9, 0.1]
    if trainer_name == "ampo":
        config = AMPOConfig(
            reward_weights=weights,
            max_teacher_length=args.max_teacher_length,
            length_grouping=args.length_grouping,
            **common,
        )
        trainer_class = AMPOTrainer
    else:
        config = GRPOConfig(reward_weights=weights, **common)
        trainer_class = GRPOTrainer
    model, tokenizer = build_tiny_model_and_tokenizer(seed=0)

    step_times = []
    phase_times: dict[str, list[float]] = {}

    class StepTimer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            self.start = time.perf_counter()
            for times in phase_times.values():  # one generation batch per optimizer step (steps_per_generation = GA)
                times.append(0.0)

        def on_step_end(self, args, state, control, **kwargs):
            step_times.append(time.perf_counter() - self.start)

    token_counts: list[tuple[int, int]] = []
    trainer = _measured(trainer_class, token_counts, phase_times)(
        model=model,
        reward_funcs=reward_funcs,
        args=config,
        train_dataset=_dataset(args.num_prompts, args.teacher_tokens),
        processing_class=tokenizer,
        callbacks=[StepTimer()],
    )
    if use_gpu:
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    scored_prompts = 0
    if trainer_name == "ampo":
        # The authors' code runs one scoring forward per triggered prompt; count the prompts that needed scoring
        # (more usable candidates than replacements), the same quantity our batched plan covers.
        scored_prompts = sum(
            round(entry["ampo/triggered_group_fraction"] * args.num_prompts)
            for entry in logs
            if entry.get("ampo/comprehension/mean") is not None
        )
    return {
        "step_times": step_times[1:],  # the first step carries one-off warm-up costs
        "phase_times": {phase: times[1:] for phase, times in phase_times.items()},
        "peak_memory_bytes": torch.cuda.max_memory_allocated()
        if use_gpu
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "scoring_forwards": sum(entry.get("ampo/scoring_forwards", 0) for entry in logs),
        "scored_prompts": scored_prompts,
        "replaced_rows": sum(entry.get("ampo/replaced_rows", 0) for entry in logs),
        "real_tokens": sum(real for real, _ in token_counts[1:]),  # the same generation batches as step_times
        "padded_tokens": sum(padded for _, padded in token_counts[1:]),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=12, help="measured optimizer steps per scenario run")
    parser.add_argument("--rounds", type=int, default=2, help="alternating repetitions of every scenario")
    parser.add_argument("--num-prompts", type=int, default=8)
    parser.add_argument("--num-generations", type=int, default=8)
    parser.add_argument("--max-completion-length", type=int, default=48)
    parser.add_argument(
        "--teacher-tokens", type=int, default=32, help="approximate length of the longer teacher solutions"
    )
    parser.add_argument(
        "--max-teacher-length",
        type=int,
        default=None,
        help="AMPO's max_teacher_length (default: max_completion_length); raise it with --teacher-tokens to measure "
        "teacher solutions longer than the student's completions",
    )
    parser.add_argument("--micro-batches", type=int, default=4, help="micro-batches per generation batch")
    parser.add_argument(
        "--length-grouping", default="guided", choices=("guided", "always", "never"), help="AMPO's length_grouping"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--cpu", action="store_true", help="stay on CPU even when a GPU is available")
    parser.add_argument("--worker", choices=SCENARIOS, help=argparse.SUPPRESS)
    model = parser.add_argument_group("cost model (--cost-model: print token counts, train nothing)")
    model.add_argument("--cost-model", action="store_true", help="print AMPO's extra tokens per step and exit")
    model.add_argument("--step-prompts", type=int, default=128, help="prompts per training step (paper: 128)")
    model.add_argument("--prompt-tokens", type=int, default=150)
    model.add_argument("--completion-tokens", type=int, default=1268, help="mean sampled completion (paper: 1268)")
    model.add_argument("--teacher-solution-tokens", type=int, default=3000, help="mean teacher solution")
    model.add_argument("--teachers", type=int, default=4)
    model.add_argument("--k", type=int, default=2)
    model.add_argument(
        "--trigger-rates", type=float, nargs="+", default=[0.543, 0.301], help="fractions of groups that trigger"
    )
    args = parser.parse_args(argv)
    if args.cost_model:
        print_cost_model(args)
        return

    if args.worker:
        print("BENCHMARK_RESULT " + json.dumps(run_scenario(args)), flush=True)
        return

    # The scenario subprocesses import this very copy of ampo_trl (a checkout need not be installed).
    package_parent = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    python_path = os.pathsep.join(filter(None, [package_parent, os.environ.get("PYTHONPATH")]))
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(args.threads),
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONPATH": python_path,
    }
    forwarded = [
        f"--steps={args.steps}",
        f"--num-prompts={args.num_prompts}",
        f"--num-generations={args.num_generations}",
        f"--max-completion-length={args.max_completion_length}",
        f"--teacher-tokens={args.teacher_tokens}",
        f"--micro-batches={args.micro_batches}",
        f"--length-grouping={args.length_grouping}",
        *([f"--max-teacher-length={args.max_teacher_length}"] if args.max_teacher_length else []),
        f"--threads={args.threads}",
        *(["--cpu"] if args.cpu else []),
    ]
    results = {name: [] for name in SCENARIOS}
    for round_index in range(args.rounds):
        for name in SCENARIOS:
            print(f"# round {round_index + 1}/{args.rounds}: {name}", file=sys.stderr, flush=True)
            completed = subprocess.run(
                [sys.executable, "-m", "ampo_trl.cli.benchmark", f"--worker={name}", *forwarded],
                env=env,
                capture_output=True,
                text=True,
            )
            lines = [line for line in completed.stdout.splitlines() if line.startswith("BENCHMARK_RESULT ")]
            if completed.returncode != 0 or not lines:
                sys.stderr.write(completed.stdout[-3000:] + completed.stderr[-5000:])
                raise SystemExit(f"benchmark scenario {name} failed (exit code {completed.returncode})")
            results[name].append(json.loads(lines[-1].split(" ", 1)[1]))

    def median_step(name):
        return statistics.median(t for run in results[name] for t in run["step_times"])

    def round_medians(name):
        return [statistics.median(run["step_times"]) for run in results[name]]

    def median_phase(name, phase):
        times = [t for run in results[name] for t in run["phase_times"].get(phase, [])]
        return statistics.median(times) if times else None

    def peak(name):
        return max(run["peak_memory_bytes"] for run in results[name])

    def tokens(name, kind):
        return sum(run[f"{kind}_tokens"] for run in results[name])

    ampo_triggered = results["ampo-triggered"]
    forwards = sum(run["scoring_forwards"] for run in ampo_triggered)
    one_per_prompt = sum(run["scored_prompts"] for run in ampo_triggered)
    for name in SCENARIOS:
        print(f"# {name}: median step {median_step(name):.4f} s, peak memory {peak(name) / 2**20:.0f} MiB")
    print(f"# scoring forwards: {forwards} batched vs {one_per_prompt} with one forward per scored prompt")
    for name in SCENARIOS:  # where a step's time goes (medians over steps; loss passes = step - generate_and_score)
        phases = {phase: median_phase(name, phase) for phase in TIMED_PHASES}
        parts = [f"{phase} {value:.4f} s" for phase, value in phases.items() if value is not None]
        if phases["generate_and_score"] is not None:
            parts.append(f"loss passes {median_step(name) - phases['generate_and_score']:.4f} s")
        print(f"# {name}: " + ", ".join(parts))
    for trigger in ("untriggered", "triggered"):
        ratios = per_round_ratios(round_medians(f"ampo-{trigger}"), round_medians(f"grpo-{trigger}"))
        print(f"# step_time_ratio_{trigger} per round: " + " ".join(f"{r:.3f}" for r in ratios)
              + f" (min {min(ratios):.3f}, max {max(ratios):.3f})")  # fmt: skip
    for name in SCENARIOS:
        real, padded = tokens(name, "real"), tokens(name, "padded")
        print(f"# {name}: loss-pass completion tokens {real} real, {padded} padded ({padded / max(real, 1):.3f})")
    for name in SCENARIOS:
        ratio = tokens(name, "padded") / max(tokens(name, "real"), 1)
        print(f"padded_per_real_tokens_{name.replace('-', '_')}: {ratio:.3f}")
    real_ratio = tokens("ampo-triggered", "real") / max(tokens("grpo-triggered", "real"), 1)
    print(f"real_token_ratio_triggered: {real_ratio:.3f}")
    print(f"peak_memory_ratio_untriggered: {peak('ampo-untriggered') / peak('grpo-untriggered'):.3f}")
    print(f"peak_memory_ratio_triggered: {peak('ampo-triggered') / peak('grpo-triggered'):.3f}")
    print(f"scoring_forwards_ratio_batched_vs_per_prompt: {forwards / max(one_per_prompt, 1):.3f}")
    print(f"step_time_ratio_untriggered: {median_step('ampo-untriggered') / median_step('grpo-untriggered'):.3f}")
    print(f"step_time_ratio_triggered: {median_step('ampo-triggered') / median_step('grpo-triggered'):.3f}")


if __name__ == "__main__":
    main()
