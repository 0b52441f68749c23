"""Command-line and recipe arguments of the train scripts: `AMPOScriptArguments` (data, rewards, demo), the SFT
baseline's `SFTScriptArguments`, and parsing ``--config recipe.yaml`` plus overrides with TRL's `TrlParser`."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from trl import ScriptArguments

from .batching import batch_plan, num_machines_from_env, num_processes_from_env
from .recipes import resolve_config_argument

if TYPE_CHECKING:  # pragma: no cover
    from trl import DatasetMixtureConfig, ModelConfig, TrlParser

    from ..config import AMPOConfig

#: Rewards used when a recipe names none: the paper's r = 0.9 * acc + 0.1 * fmt as two functions, so that the
#: adaptive trigger looks at accuracy alone (the first function, threshold 1.0).
DEFAULT_REWARD_FUNCS = ("accuracy", "format")
DEFAULT_REWARD_WEIGHTS = (0.9, 0.1)


@dataclass
class PoolDataArguments(ScriptArguments):
    """Where the training data comes from and how its columns map to the canonical schema (shared by
    `scripts/train.py` and `scripts/train_sft.py`)."""

    # ---------------------------------------------------------------------------------------------------- data
    dataset_files: list[str] | None = field(
        default=None,
        metadata={
            "help": "Local data files (.parquet, .jsonl, .json, .csv) or directories (saved with save_to_disk, or "
            "holding parquet files), concatenated. Alternative to dataset_name, which also accepts one local path."
        },
    )
    dataset_format: str | None = field(
        default=None,
        metadata={
            "help": "Pool format of the data: 'canonical' (prompt, answer, teacher_solutions), 'ampo' (official AMPO "
            "rows: prompt, reward_model, target_lst), 'luffy' (prompt, reward_model, target) or 'solutions_jsonl' "
            "(question, answer, solutions). None: detected from the columns.",
            "choices": ["canonical", "ampo", "luffy", "solutions_jsonl", None],
        },
    )
    dataset_prompt_column: str | None = field(
        default=None,
        metadata={"help": "Column of the data holding the prompt, renamed to 'prompt'. None: 'prompt'."},
    )
    dataset_answer_column: str | None = field(
        default=None,
        metadata={
            "help": "Column of the data holding the gold answer, renamed to AMPOConfig.answer_column (default "
            "'answer'). None: 'answer', or taken from reward_model.ground_truth when there is no such column."
        },
    )
    dataset_pool_column: str | None = field(
        default=None,
        metadata={
            "help": "Column of the data holding the teacher-solution pool, renamed to "
            "AMPOConfig.guidance_pool_column (default 'teacher_solutions'). None: that column, or converted from "
            "target_lst / target / solutions (see dataset_format)."
        },
    )
    luffy_teacher_name: str = field(
        default="DeepSeek-R1",
        metadata={"help": "Teacher name given to the single target of LUFFY-format rows."},
    )
    normalize_solutions: bool | None = field(
        default=None,
        metadata={
            "help": "Rewrite '<think>...</think> ... \\boxed{x}' teacher texts to end with '<answer>x</answer>' "
            "(ampo_trl.pool.normalize_solution). None: yes for converted formats, no for canonical data."
        },
    )
    pool_teachers: list[str] | None = field(
        default=None,
        metadata={
            "help": "Keep only these teachers in every pool (teacher-composition experiments). Unknown names are an "
            "error that lists the teachers present in the data."
        },
    )
    wrap_prompt_in_chat: bool = field(
        default=True,
        metadata={
            "help": "Turn plain-string prompts into a one-message user conversation, so the model's chat template is "
            "applied (set false for base models without a chat template)."
        },
    )
    system_prompt: str | None = field(
        default=None,
        metadata={
            "help": "System prompt to inject into every prompt, replacing any stored system message. None: prompts "
            "are kept as stored (see use_ampo_system_prompt)."
        },
    )
    use_ampo_system_prompt: bool = field(
        default=False,
        metadata={
            "help": "Inject the paper's system prompt (ampo_trl.answers.SYSTEM_PROMPT: 'You are a helpful assistant. "
            "Please reason step by step ... within the <answer> </answer> tags.'), replacing stored ones."
        },
    )
    max_prompt_length: int | None = field(
        default=None,
        metadata={
            "help": "Drop training rows whose chat-templated prompt is longer than this many tokens (the paper: 1024; "
            "TRL 1.16 has no prompt truncation). The number of dropped rows is logged."
        },
    )
    max_train_samples: int | None = field(
        default=None,
        metadata={"help": "Use only the first N training rows (quick runs, tests)."},
    )


@dataclass
class AMPOScriptArguments(PoolDataArguments):
    """Script arguments of `scripts/train.py` (TRL's `ScriptArguments` plus AMPO's data, reward and demo options).

    Training hyper-parameters live in `AMPOConfig`, the model in TRL's `ModelConfig`; every field of the three can be
    set in the recipe YAML or on the command line (``--name value``).
    """

    # ------------------------------------------------------------------------------------------------- rewards
    reward_funcs: list[str] = field(
        default_factory=lambda: list(DEFAULT_REWARD_FUNCS),
        metadata={
            "help": "Reward functions: short names of ampo_trl.rewards.REWARD_FUNCS (accuracy, format, ampo, "
            "repetition_penalty, multiple_choice) or dotted import paths 'package.module.function' / "
            "'package.module:function'. With the default [accuracy, format] and no reward_weights, the weights are "
            "the paper's [0.9, 0.1]."
        },
    )
    # ----------------------------------------------------------------------------------- training-time evaluation
    eval_file: str | None = field(
        default=None,
        metadata={
            "help": "Validation file (or benchmark short name) evaluated during training by "
            "ampo_trl.evaluation.AMPOEvalCallback; metrics are logged as eval/... ."
        },
    )
    eval_file_steps: int = field(default=50, metadata={"help": "Evaluate eval_file every N optimizer steps."})
    eval_file_num_samples: int = field(default=1, metadata={"help": "Samples per eval_file problem."})
    eval_file_max_new_tokens: int | None = field(
        default=None, metadata={"help": "Generation budget for eval_file. None: max_completion_length."}
    )
    eval_file_temperature: float = field(default=0.6, metadata={"help": "Sampling temperature for eval_file."})
    eval_file_max_problems: int | None = field(
        default=None, metadata={"help": "Evaluate only the first N problems of each benchmark in eval_file."}
    )
    # ------------------------------------------------------------------------------------------------- runtime
    torch_num_threads: int | None = field(
        default=None,
        metadata={"help": "torch.set_num_threads(N) before training (CPU runs: 1 is often fastest for tiny models)."},
    )
    # ---------------------------------------------------------------------------------------------------- demo
    demo: bool = field(
        default=False,
        metadata={
            "help": "Run the built-in CPU demo (ampo_trl.demo): the offline tiny model is warmed up on easy addition "
            "problems (cached), then trained with RL on easy + hard problems whose pool holds solutions of three "
            "synthetic teachers; prints a before/after summary and writes a plot. model_name_or_path must be 'tiny'."
        },
    )
    demo_warmup_steps: int = field(default=400, metadata={"help": "Demo: supervised warm-up steps (cached)."})
    demo_warmup_learning_rate: float = field(default=3e-3, metadata={"help": "Demo: warm-up learning rate."})
    demo_warmup_batch_size: int = field(default=32, metadata={"help": "Demo: warm-up batch size."})
    demo_warmup_hard_fraction: float = field(
        default=0.01,
        metadata={
            "help": "Demo: share of hard problems in the warm-up data (a weak prior, like an instruct model's)."
        },
    )
    demo_warmup_style: str = field(
        default="column",
        metadata={"help": "Demo: solution style the student is warmed up on (one of the demo teachers)."},
    )
    demo_train_prompts: int = field(default=4096, metadata={"help": "Demo: number of RL training prompts."})
    demo_hard_fraction: float = field(default=0.5, metadata={"help": "Demo: share of hard problems in RL prompts."})
    demo_eval_problems: int = field(
        default=200, metadata={"help": "Demo: held-out problems per difficulty for the before/after accuracy."}
    )
    demo_seed: int = field(default=0, metadata={"help": "Demo: seed of the task split and the warm-up."})
    demo_plot: bool = field(default=True, metadata={"help": "Demo: write demo_plot.png into output_dir."})
    demo_sft: bool = field(
        default=False,
        metadata={
            "help": "Demo baseline: instead of RL, train the warmed-up student by supervised learning on the "
            "(prompt, teacher solution) pairs of the RL prompts' pools, with the recipe's optimizer, learning rate, "
            "schedule, per_device_train_batch_size (pairs per step) and max_steps; then the same held-out evaluation."
        },
    )
    demo_eval_steps: int = field(
        default=0,
        metadata={
            "help": "Demo: also measure held-out greedy accuracy every N optimizer steps (learning curves in "
            "demo_summary.json and the plot; monitoring only, nothing is selected on it). 0: before and after only."
        },
    )
    demo_pass_at_k_samples: int = field(
        default=32,
        metadata={
            "help": "Demo: samples per held-out hard problem at temperature 1.0 for pass@k, k = 1..N, before and "
            "after training (in demo_summary.json). 0: off."
        },
    )

    def __post_init__(self):
        if isinstance(self.reward_funcs, str):
            self.reward_funcs = [name for name in self.reward_funcs.replace(",", " ").split() if name]
        if self.demo_sft and not self.demo:
            raise ValueError(
                "demo_sft: true is the CPU demo's SFT baseline; set demo: true as well (or drop demo_sft)."
            )
        for name in ("demo_eval_steps", "demo_pass_at_k_samples"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0 (0 switches it off), got {getattr(self, name)}.")


@dataclass
class SFTScriptArguments(PoolDataArguments):
    """Script arguments of `scripts/train_sft.py`: the same data options as `scripts/train.py`."""

    pool_column: str = field(
        default="teacher_solutions", metadata={"help": "Pool column after conversion (see dataset_pool_column)."}
    )
    answer_column: str = field(default="answer", metadata={"help": "Answer column after conversion."})
    completion_only: bool = field(
        default=True,
        metadata={
            "help": "Train on the teacher solution only: each (system, user, assistant) conversation becomes a TRL "
            "prompt-completion pair, so the loss skips the prompt tokens."
        },
    )


def make_parser() -> TrlParser:
    """TrlParser over (`AMPOScriptArguments`, `AMPOConfig`, `ModelConfig`, `DatasetMixtureConfig`)."""
    from trl import DatasetMixtureConfig, ModelConfig, TrlParser

    from ..config import AMPOConfig

    return TrlParser((AMPOScriptArguments, AMPOConfig, ModelConfig, DatasetMixtureConfig))


def make_sft_parser() -> TrlParser:
    """TrlParser over (`SFTScriptArguments`, `SFTConfig`, `ModelConfig`, `DatasetMixtureConfig`)."""
    from trl import DatasetMixtureConfig, ModelConfig, SFTConfig, TrlParser

    return TrlParser((SFTScriptArguments, SFTConfig, ModelConfig, DatasetMixtureConfig))


@dataclass
class Recipe:
    """Where the run's settings came from (shown in the model card): the ``--config`` file (a path or a shipped
    recipe name) and the command line."""

    path: str | None = None
    text: str | None = None
    argv: list[str] = field(default_factory=list)

    @classmethod
    def from_argv(cls, argv: Sequence[str]) -> Recipe:
        """The recipe named by ``--config`` in ``argv`` (read now, so the card shows what this run used)."""
        recipe = cls(argv=list(argv))
        resolved = resolve_config_argument(recipe.argv)
        if "--config" in resolved:
            recipe.path = resolved[resolved.index("--config") + 1]
            with open(recipe.path, encoding="utf-8") as handle:
                recipe.text = handle.read()
        return recipe


def parse_args(
    argv: Sequence[str] | None = None,
) -> tuple[AMPOScriptArguments, AMPOConfig, ModelConfig, DatasetMixtureConfig, Recipe]:
    """Parse ``argv`` (default: ``sys.argv[1:]``): ``--config recipe.yaml`` (a path or a shipped recipe name, see
    `ampo_trl.cli.recipes`) plus overrides.

    Returns ``(script_args, training_args, model_args, dataset_args, recipe)``. Unknown keys in the YAML or on the
    command line are an error. A generation batch that cannot hold whole groups raises a `ValueError` that spells
    out the arithmetic (before anything is loaded).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    recipe = Recipe.from_argv(argv)
    argv = resolve_config_argument(argv)
    parser = make_parser()
    try:
        script_args, training_args, model_args, dataset_args = parser.parse_args_and_config(argv)
    except ValueError as error:
        if "generation_batch_size" in str(error) or "num_generations" in str(error):
            plan_error = _explain_batch_error(parser, argv)
            if plan_error is not None:
                raise plan_error from error
        raise
    return script_args, training_args, model_args, dataset_args, recipe


def _explain_batch_error(parser, argv) -> ValueError | None:
    """Re-read the raw batch settings (defaults already include the YAML values) and explain the failure."""
    args = [a for i, a in enumerate(argv) if a != "--config" and (i == 0 or argv[i - 1] != "--config")]
    try:
        namespace, _ = parser.parse_known_args(args=args)
        batch_plan(
            per_device_train_batch_size=namespace.per_device_train_batch_size,
            num_processes=num_processes_from_env(),
            num_machines=num_machines_from_env(),
            gradient_accumulation_steps=namespace.gradient_accumulation_steps,
            num_generations=namespace.num_generations,
            steps_per_generation=namespace.steps_per_generation,
            generation_batch_size=namespace.generation_batch_size,
        )
    except ValueError as error:
        return error
    except Exception:  # noqa: BLE001 - explaining is best effort; the original error is raised otherwise
        return None
    return None


def config_fields() -> dict[str, set[str]]:
    """Field names of each parsed dataclass (used by the recipe tests)."""
    from trl import DatasetMixtureConfig, ModelConfig

    from ..config import AMPOConfig

    return {
        cls.__name__: {f.name for f in dataclasses.fields(cls)}
        for cls in (AMPOScriptArguments, AMPOConfig, ModelConfig, DatasetMixtureConfig)
    }
