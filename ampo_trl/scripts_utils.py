"""The library side of `scripts/train.py`: argument parsing, dataset loading and checks, model-card extras.

`scripts/train.py` is a thin wrapper around :func:`main`; everything here is importable and testable without
starting a training run. The flow of :func:`main` is

1. parse ``--config recipe.yaml`` plus command-line overrides into `AMPOScriptArguments`, `AMPOConfig`, TRL's
   `ModelConfig` and `DatasetMixtureConfig` (:func:`parse_args`; a batch-size error names the arithmetic);
2. resolve the reward functions (short names of `ampo_trl.rewards.REWARD_FUNCS` or dotted import paths), check that
   the requested loggers are installed (:func:`check_report_to`);
3. load the dataset (hub id, local parquet/jsonl/json/csv file, directory, or a TRL dataset mixture), map its
   columns, convert the official AMPO (``target_lst``) and LUFFY (``target``) formats to the canonical one, inject
   the system prompt when asked, filter teachers and over-long prompts (:func:`load_training_dataset`);
4. check everything that can be checked without the model (:func:`validate_setup`): columns, pools, reward names
   and weights, the correctness reward, batch arithmetic;
5. only then build the `AMPOTrainer` (which loads the model, with PEFT / quantization from `ModelConfig`), train,
   save model, tokenizer, trainer state and a model card (AMPO tag, paper citation, the recipe used), and
   optionally push to the hub.

With ``demo: true`` (see ``recipes/demo/``) the dataset and the model come from :mod:`ampo_trl.demo` instead, and
the run ends with a before/after summary and a plot.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from trl import ScriptArguments

logger = logging.getLogger("ampo_trl.train")

#: Rewards used when a recipe names none: the paper's r = 0.9 * acc + 0.1 * fmt as two functions, so that the
#: adaptive trigger looks at accuracy alone (the first function, threshold 1.0).
DEFAULT_REWARD_FUNCS = ("accuracy", "format")
DEFAULT_REWARD_WEIGHTS = (0.9, 0.1)

#: Reward functions that need the gold answer, and the columns `ampo_trl.rewards` reads it from.
_GOLD_REWARDS = ("accuracy_reward", "ampo_reward", "multiple_choice_reward")
_GOLD_COLUMNS = ("answer", "solution", "reward_model")

_REPORT_TO_CHECKS = {
    "wandb": "is_wandb_available",
    "tensorboard": "is_tensorboard_available",
    "trackio": "is_trackio_available",
    "mlflow": "is_mlflow_available",
    "comet_ml": "is_comet_available",
    "clearml": "is_clearml_available",
    "swanlab": "is_swanlab_available",
}
_REPORT_TO_PACKAGES = {"tensorboard": "tensorboard", "comet_ml": "comet_ml"}


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
            "help": "Inject the paper's system prompt (ampo_trl.pool.SYSTEM_PROMPT: 'You are a helpful assistant. "
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

    def __post_init__(self):
        if isinstance(self.reward_funcs, str):
            self.reward_funcs = [name for name in self.reward_funcs.replace(",", " ").split() if name]


# ------------------------------------------------------------------------------------------------------ parsing
def make_parser():
    """TrlParser over (`AMPOScriptArguments`, `AMPOConfig`, `ModelConfig`, `DatasetMixtureConfig`)."""
    from trl import DatasetMixtureConfig, ModelConfig, TrlParser

    from .config import AMPOConfig

    return TrlParser((AMPOScriptArguments, AMPOConfig, ModelConfig, DatasetMixtureConfig))


@dataclass
class Recipe:
    """Where the run's settings came from (shown in the model card)."""

    path: str | None = None
    text: str | None = None
    argv: list[str] = field(default_factory=list)


def parse_args(argv: Sequence[str] | None = None):
    """Parse ``argv`` (default: ``sys.argv[1:]``): ``--config recipe.yaml`` plus overrides.

    Returns ``(script_args, training_args, model_args, dataset_args, recipe)``. Unknown keys in the YAML or on the
    command line are an error. A generation batch that cannot hold whole groups raises a `ValueError` that spells
    out the arithmetic (before anything is loaded).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    recipe = Recipe(argv=list(argv))
    if "--config" in argv:
        config_path = argv[argv.index("--config") + 1]
        recipe.path = config_path
        with open(config_path, encoding="utf-8") as handle:
            recipe.text = handle.read()
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


# ------------------------------------------------------------------------------------------------ batch sizes
@dataclass(frozen=True)
class BatchPlan:
    """TRL's batch arithmetic for one run (all counts are completions unless named prompts)."""

    num_processes: int
    per_device_train_batch_size: int
    gradient_accumulation_steps: int
    num_generations: int
    generation_batch_size: int  # completions sampled per generation round (global)
    steps_per_generation: int  # micro-batches (per process) the generation batch is cut into

    @property
    def prompts_per_generation(self) -> int:
        return self.generation_batch_size // self.num_generations

    @property
    def completions_per_optimizer_step(self) -> int:
        return self.per_device_train_batch_size * self.num_processes * self.gradient_accumulation_steps

    @property
    def optimizer_steps_per_generation(self) -> float:
        return self.steps_per_generation / self.gradient_accumulation_steps

    def describe(self) -> str:
        return (
            f"{self.prompts_per_generation} prompts x {self.num_generations} completions = "
            f"{self.generation_batch_size} completions per generation round on {self.num_processes} process(es); "
            f"{self.completions_per_optimizer_step} completions per optimizer step "
            f"({self.per_device_train_batch_size} per device x {self.num_processes} x "
            f"{self.gradient_accumulation_steps} accumulation steps); "
            f"{self.optimizer_steps_per_generation:g} optimizer step(s) per generation round"
        )


def batch_plan(
    per_device_train_batch_size: int,
    num_processes: int,
    gradient_accumulation_steps: int,
    num_generations: int,
    steps_per_generation: int | None = None,
    generation_batch_size: int | None = None,
) -> BatchPlan:
    """TRL 1.16's generation-batch arithmetic, with errors that say which numbers to change.

    ``generation_batch_size`` defaults to ``per_device_train_batch_size * num_processes * steps_per_generation`` and
    ``steps_per_generation`` to ``gradient_accumulation_steps`` (as in `GRPOConfig`). The generation batch must hold
    whole groups of ``num_generations`` completions and split evenly into per-process micro-batches.
    """
    for name, value in (
        ("per_device_train_batch_size", per_device_train_batch_size),
        ("num_processes", num_processes),
        ("gradient_accumulation_steps", gradient_accumulation_steps),
        ("num_generations", num_generations),
    ):
        if value is None or value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}.")
    if num_generations < 2:
        raise ValueError(
            f"num_generations must be >= 2 (GRPO compares completions of a group), got {num_generations}."
        )
    global_micro_batch = per_device_train_batch_size * num_processes
    if generation_batch_size is not None and steps_per_generation is not None:
        raise ValueError(
            "Set either generation_batch_size or steps_per_generation, not both "
            f"(got {generation_batch_size} and {steps_per_generation})."
        )
    if generation_batch_size is None:
        steps = steps_per_generation if steps_per_generation is not None else gradient_accumulation_steps
        generation_batch_size = global_micro_batch * steps
        origin = (
            f"per_device_train_batch_size ({per_device_train_batch_size}) x processes ({num_processes}) x "
            f"{'steps_per_generation' if steps_per_generation is not None else 'gradient_accumulation_steps'} "
            f"({steps}) = {generation_batch_size}"
        )
    else:
        if generation_batch_size % global_micro_batch:
            raise ValueError(
                f"generation_batch_size ({generation_batch_size}) must be a multiple of per_device_train_batch_size "
                f"({per_device_train_batch_size}) x processes ({num_processes}) = {global_micro_batch}, so that it "
                "splits into whole micro-batches. Change generation_batch_size or per_device_train_batch_size."
            )
        steps = generation_batch_size // global_micro_batch
        origin = f"generation_batch_size = {generation_batch_size}"
    if generation_batch_size % num_generations:
        prompts = generation_batch_size / num_generations
        raise ValueError(
            f"The generation batch cannot form whole groups: {origin} completions is not a multiple of "
            f"num_generations ({num_generations}) ({prompts:g} prompts). Every prompt needs all its "
            f"{num_generations} completions in the same generation batch. Make the generation batch a multiple of "
            f"{num_generations}, e.g. per_device_train_batch_size = "
            f"{_round_up_to(per_device_train_batch_size, num_generations)}, or change num_generations."
        )
    return BatchPlan(
        num_processes=num_processes,
        per_device_train_batch_size=per_device_train_batch_size,
        gradient_accumulation_steps=gradient_accumulation_steps,
        num_generations=num_generations,
        generation_batch_size=generation_batch_size,
        steps_per_generation=steps,
    )


def _round_up_to(value: int, multiple: int) -> int:
    return int(math.ceil(value / multiple) * multiple)


def plan_from_config(training_args, num_processes: int | None = None) -> BatchPlan:
    """The `BatchPlan` of a config parsed in this launch (``num_processes``: default ``WORLD_SIZE``).

    `GRPOConfig` derives ``generation_batch_size`` / ``steps_per_generation`` for the process count it was parsed
    in, so this is only meaningful in the same launch. For another process count use :func:`plan_from_mapping` on
    the raw recipe values.
    """
    return batch_plan(
        per_device_train_batch_size=training_args.per_device_train_batch_size,
        num_processes=num_processes or num_processes_from_env(),
        gradient_accumulation_steps=training_args.gradient_accumulation_steps,
        num_generations=training_args.num_generations,
        generation_batch_size=training_args.generation_batch_size,
    )


def plan_from_mapping(values: dict, num_processes: int) -> BatchPlan:
    """The `BatchPlan` of raw recipe values (a YAML mapping) on ``num_processes`` processes, with TRL's defaults
    (``per_device_train_batch_size`` 8, ``gradient_accumulation_steps`` 1, ``num_generations`` 8)."""
    return batch_plan(
        per_device_train_batch_size=int(values.get("per_device_train_batch_size", 8)),
        num_processes=num_processes,
        gradient_accumulation_steps=int(values.get("gradient_accumulation_steps", 1)),
        num_generations=int(values.get("num_generations", 8)),
        steps_per_generation=values.get("steps_per_generation"),
        generation_batch_size=values.get("generation_batch_size"),
    )


def num_processes_from_env() -> int:
    """Number of training processes of this launch (``WORLD_SIZE`` set by accelerate / torchrun), else 1."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


# ---------------------------------------------------------------------------------------------- rewards, loggers
def resolve_rewards(names: Sequence[str]) -> list:
    """Reward functions from short names or dotted paths (the working directory is importable, as in TRL)."""
    from .rewards import resolve_reward_funcs

    if not names:
        raise ValueError("reward_funcs is empty: name at least one reward function (e.g. [accuracy, format]).")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    return resolve_reward_funcs(list(names))


def default_reward_weights(script_args, training_args) -> None:
    """The paper's [0.9, 0.1] for the default [accuracy, format] when no reward_weights are given."""
    if training_args.reward_weights is None and list(script_args.reward_funcs) == list(DEFAULT_REWARD_FUNCS):
        training_args.reward_weights = list(DEFAULT_REWARD_WEIGHTS)


def check_report_to(report_to) -> list[str]:
    """The requested logging integrations, or a `ValueError` naming the ones that are not installed."""
    if report_to is None:
        return []
    requested = [report_to] if isinstance(report_to, str) else list(report_to)
    requested = [name for name in requested if name not in ("none", None)]
    if "all" in requested:
        return requested
    from transformers.integrations import integration_utils

    missing = []
    for name in requested:
        check = _REPORT_TO_CHECKS.get(name)
        if check is not None and hasattr(integration_utils, check) and not getattr(integration_utils, check)():
            missing.append(name)
    if missing:
        packages = " ".join(_REPORT_TO_PACKAGES.get(name, name) for name in missing)
        raise ValueError(
            f"report_to asks for {missing}, which {'is' if len(missing) == 1 else 'are'} not installed. Install it "
            f"(pip install {packages}) or log elsewhere, e.g. --report_to none (console only) or tensorboard."
        )
    return requested


# ---------------------------------------------------------------------------------------------------- datasets
def _column_names(dataset) -> list[str]:
    return list(getattr(dataset, "column_names", None) or [])


def load_raw_dataset(script_args, dataset_args):
    """The training split as it is stored (no conversion): a TRL mixture, local files, or a hub dataset."""
    from datasets import concatenate_datasets, load_dataset

    from .pool import load_pool_dataset

    split = script_args.dataset_train_split
    sources = [bool(dataset_args is not None and dataset_args.datasets), bool(script_args.dataset_files)]
    sources.append(bool(script_args.dataset_name))
    if sum(sources) == 0:
        raise ValueError(
            "No training data: set dataset_name (a hub id, a local file or a directory), dataset_files, or a "
            "`datasets:` mixture in the recipe."
        )
    if sum(sources) > 1:
        raise ValueError("Set only one of dataset_name, dataset_files and a `datasets:` mixture.")
    if dataset_args is not None and dataset_args.datasets:
        from trl import get_dataset

        mixture = get_dataset(dataset_args)
        return mixture[split] if split in mixture else mixture["train"]
    paths = list(script_args.dataset_files or [])
    name = script_args.dataset_name
    if name and (os.path.exists(name) or name.endswith((".parquet", ".jsonl", ".json", ".csv"))):
        paths = [name]
    if paths:
        parts = []
        for path in paths:
            if not os.path.exists(path):
                raise FileNotFoundError(f"Dataset file or directory not found: {path}")
            parts.append(load_pool_dataset(path, split=split, convert=False))
        return parts[0] if len(parts) == 1 else concatenate_datasets(parts)
    dataset = load_dataset(name, name=script_args.dataset_config, split=split, streaming=script_args.dataset_streaming)
    return dataset


def map_columns(dataset, script_args, pool_column: str, answer_column: str):
    """Rename the user's prompt / answer / pool columns to the names the trainer reads."""
    columns = _column_names(dataset)
    targets = (
        (script_args.dataset_prompt_column, "prompt", "dataset_prompt_column"),
        (script_args.dataset_answer_column, answer_column, "dataset_answer_column"),
        (script_args.dataset_pool_column, pool_column, "dataset_pool_column"),
    )
    renames = {}
    for source, target, option in targets:
        if source is None or source == target:
            continue
        if source not in columns:
            raise ValueError(f"{option}={source!r}: the dataset has no such column; its columns are {columns}.")
        renames[source] = target
    if not renames:
        return dataset
    clashing = [target for source, target in renames.items() if target in columns and target not in renames]
    if clashing:
        logger.warning("Replacing the existing column(s) %s by the mapped ones.", clashing)
        dataset = dataset.remove_columns(clashing)
    return dataset.rename_columns(renames)


def load_training_dataset(
    script_args,
    dataset_args=None,
    tokenizer=None,
    *,
    pool_column: str = "teacher_solutions",
    answer_column: str = "answer",
    chat_template_kwargs: dict | None = None,
):
    """Load, map, convert and filter the training data (see the module docstring). Never loads a model.

    ``pool_column`` / ``answer_column``: the names the trainer reads (`AMPOConfig.guidance_pool_column` /
    ``answer_column``). ``tokenizer`` is only needed for ``max_prompt_length``.
    """
    from .pool import SYSTEM_PROMPT, apply_system_prompt, detect_pool_format, gold_text, to_canonical

    dataset = load_raw_dataset(script_args, dataset_args)
    if not hasattr(dataset, "column_names") or dataset.column_names is None:
        raise ValueError("Streaming datasets are not supported by scripts/train.py; set dataset_streaming: false.")
    dataset = map_columns(dataset, script_args, pool_column, answer_column)
    source_format = script_args.dataset_format or detect_pool_format(dataset.column_names, pool_column)
    if source_format not in (None, "canonical"):
        dataset = to_canonical(
            dataset,
            source_format,
            pool_column=pool_column,
            answer_column=answer_column,
            teacher_name=script_args.luffy_teacher_name,
            normalize=script_args.normalize_solutions,
        )
    elif script_args.normalize_solutions and pool_column in dataset.column_names:
        dataset = to_canonical(dataset, "canonical", pool_column=pool_column, normalize=True)
    columns = dataset.column_names
    if answer_column not in columns and "reward_model" in columns:
        dataset = dataset.map(
            lambda row: {answer_column: gold_text(row["reward_model"])}, desc="answer from reward_model.ground_truth"
        )
    if "prompt" not in dataset.column_names:
        raise ValueError(
            f"The training data has no 'prompt' column; its columns are {dataset.column_names}. Name the prompt "
            "column with dataset_prompt_column (e.g. --dataset_prompt_column question)."
        )

    system_prompt = SYSTEM_PROMPT if script_args.use_ampo_system_prompt else script_args.system_prompt
    if script_args.use_ampo_system_prompt and script_args.system_prompt is not None:
        raise ValueError("Set either system_prompt or use_ampo_system_prompt, not both.")
    wrap = script_args.wrap_prompt_in_chat
    if system_prompt is not None or wrap:

        def prompt_map(row):
            prompt = apply_system_prompt(row["prompt"], system_prompt)
            if wrap and isinstance(prompt, str):
                prompt = [{"role": "user", "content": prompt}]
            return {"prompt": prompt}

        dataset = dataset.map(prompt_map, desc="prompts")

    if script_args.pool_teachers:
        dataset = filter_pool_teachers(dataset, script_args.pool_teachers, pool_column)
    if script_args.max_train_samples is not None:
        dataset = dataset.select(range(min(script_args.max_train_samples, len(dataset))))
    if script_args.max_prompt_length is not None:
        if tokenizer is None:
            raise ValueError("max_prompt_length needs the tokenizer of the model.")
        dataset = drop_long_prompts(dataset, tokenizer, script_args.max_prompt_length, chat_template_kwargs)
    if len(dataset) == 0:
        raise ValueError("The training dataset is empty after loading and filtering.")
    return dataset


def filter_pool_teachers(dataset, teachers: Sequence[str], pool_column: str):
    """Keep only ``teachers`` in every pool; an unknown teacher is an error listing the known ones."""
    from .pool import parse_pool

    if pool_column not in dataset.column_names:
        raise ValueError(f"pool_teachers is set but the dataset has no pool column '{pool_column}'.")
    wanted = list(dict.fromkeys(teachers))
    present: dict[str, int] = {}
    for index, pool in enumerate(dataset[pool_column]):
        for solution in parse_pool(pool, row_index=index, column=pool_column):
            present[solution.teacher] = present.get(solution.teacher, 0) + 1
    unknown = [name for name in wanted if name not in present]
    if unknown:
        known = ", ".join(f"{name} ({count})" for name, count in sorted(present.items()))
        raise ValueError(f"pool_teachers names {unknown}, not found in any pool. Teachers in the data: {known}.")

    def keep(row):
        solutions = parse_pool(row[pool_column], column=pool_column)
        return {pool_column: [{"teacher": s.teacher, "text": s.text} for s in solutions if s.teacher in wanted]}

    filtered = dataset.map(keep, desc=f"keep teachers {wanted}")
    logger.info("Pools restricted to %s (solutions per teacher before: %s).", wanted, present)
    return filtered


def drop_long_prompts(dataset, tokenizer, max_prompt_length: int, chat_template_kwargs: dict | None = None):
    """Drop rows whose chat-templated prompt exceeds ``max_prompt_length`` tokens (logged)."""
    from trl.data_utils import is_conversational

    kwargs = dict(chat_template_kwargs or {})

    def length(row):
        prompt = row["prompt"]
        if is_conversational({"prompt": prompt}):
            ids = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True, **kwargs)
            if isinstance(ids, dict) or hasattr(ids, "keys"):
                ids = ids["input_ids"]
        else:
            ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        return {"__prompt_tokens": len(ids)}

    measured = dataset.map(length, desc="prompt lengths")
    keep = [i for i, n in enumerate(measured["__prompt_tokens"]) if n <= max_prompt_length]
    dropped = len(dataset) - len(keep)
    if dropped:
        logger.warning(
            "Dropped %d of %d rows whose prompt is longer than max_prompt_length=%d tokens.",
            dropped,
            len(dataset),
            max_prompt_length,
        )
    return dataset.select(keep) if dropped else dataset


# ---------------------------------------------------------------------------------------------------- checks
def validate_setup(dataset, reward_funcs, script_args, training_args, num_processes: int | None = None) -> BatchPlan:
    """Everything that can fail before the model is loaded. Returns the batch plan; raises `ValueError`."""
    from .pool import validate_pool_dataset

    plan = plan_from_config(training_args, num_processes)
    columns = _column_names(dataset)
    guided = training_args.guidance_trigger != "never"
    if "prompt" not in columns:
        raise ValueError(f"The training data has no 'prompt' column; its columns are {columns}.")
    if guided:
        for column, option, source_option in (
            (training_args.guidance_pool_column, "guidance_pool_column", "dataset_pool_column"),
            (training_args.answer_column, "answer_column", "dataset_answer_column"),
        ):
            if column not in columns:
                raise ValueError(
                    f"AMPO guidance needs the column '{column}' ({option}), but the training data has only "
                    f"{columns}. Map your column with {source_option}, use a supported pool format (AMPO target_lst, "
                    "LUFFY target, solutions JSONL), or set guidance_trigger: never for the GRPO baseline."
                )
        report = validate_pool_dataset(
            dataset,
            pool_column=training_args.guidance_pool_column,
            answer_column=training_args.answer_column,
            prompt_column="prompt",
        )
        report.raise_if_fatal()
        if report.num_warnings:
            logger.warning(report.summary())
        if report.stats.solutions == 0:
            raise ValueError(
                "No training row has a usable teacher solution, so AMPO could never guide. Check the pool column, or "
                "set guidance_trigger: never for the GRPO baseline."
            )
    names = [getattr(function, "__name__", str(function)) for function in reward_funcs]
    needs_gold = [name for name in names if name in _GOLD_REWARDS]
    if needs_gold and not any(column in columns for column in (training_args.answer_column, *_GOLD_COLUMNS)):
        raise ValueError(
            f"The reward(s) {needs_gold} need the gold answer in a column named 'answer', 'solution' or "
            f"'reward_model'; the training data has {columns}. Map it with dataset_answer_column."
        )
    weights = training_args.reward_weights
    if weights is not None and len(weights) != len(reward_funcs):
        raise ValueError(
            f"reward_weights has {len(weights)} value(s) {list(weights)} but there are {len(reward_funcs)} reward "
            f"function(s) {names}; give one weight per function."
        )
    if guided and training_args.correctness_reward is not None and training_args.correctness_reward not in names:
        raise ValueError(
            f"correctness_reward={training_args.correctness_reward!r} is not one of the reward functions {names}."
        )
    if guided and training_args.correctness_reward is None and names and names[0] == "format_reward":
        raise ValueError(
            "The first reward function decides correctness (the adaptive trigger) but it is format_reward; put the "
            "accuracy reward first or set correctness_reward."
        )
    return plan


# ----------------------------------------------------------------------------------------------- model card
def model_card_extras(recipe: Recipe, plan: BatchPlan | None, script_args, extra_sections: Sequence[str] = ()) -> str:
    """Markdown appended to the TRL model card: how to reproduce this run."""
    lines = ["", "## Training recipe", ""]
    command = "accelerate launch scripts/train.py " + " ".join(shlex.quote(arg) for arg in recipe.argv)
    lines += [
        "Trained with [ampo_trl](https://arxiv.org/abs/2510.02227) (AMPO on TRL):",
        "",
        "```bash",
        command,
        "```",
    ]
    if plan is not None:
        lines += ["", f"Batch layout: {plan.describe()}."]
    if recipe.text is not None:
        lines += ["", f"Recipe `{recipe.path}`:", "", "```yaml", recipe.text.rstrip(), "```"]
    for section in extra_sections:
        lines += ["", section.rstrip()]
    return "\n".join(lines) + "\n"


def attach_model_card_extras(trainer, extras: Callable[[], str]) -> None:
    """Make every model card the trainer writes (checkpoints, the end of training, ``push_to_hub``) end with
    ``extras()``: TRL regenerates README.md from scratch each time, which would drop the recipe section."""
    original = trainer.create_model_card

    def create_model_card(*args, **kwargs):
        result = original(*args, **kwargs)
        card = Path(trainer.args.output_dir) / "README.md"
        if trainer.is_world_process_zero() and card.is_file():
            with open(card, "a", encoding="utf-8") as handle:
                handle.write(extras())
        return result

    trainer.create_model_card = create_model_card


def write_model_card(trainer, script_args) -> Path | None:
    """TRL's model card (tags trl/grpo/ampo, the AMPO paper and its citation) plus the attached extras (the recipe).
    Main process only."""
    if not trainer.is_world_process_zero():
        return None
    output_dir = Path(trainer.args.output_dir)
    if trainer.args.hub_model_id is None:
        model_name = output_dir.name
    else:
        model_name = trainer.args.hub_model_id.split("/")[-1]
    dataset_name = script_args.dataset_name or ("ampo_trl.demo" if script_args.demo else None)
    trainer.create_model_card(model_name=model_name, dataset_name=dataset_name)
    return output_dir / "README.md"


# -------------------------------------------------------------------------------------------------------- main
def _configure_logging(training_args):
    import datasets
    import transformers

    level = training_args.get_process_log_level()
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    for name in ("ampo_trl", "ampo_trl.train"):
        logging.getLogger(name).setLevel(level)
    datasets.utils.logging.set_verbosity(level)
    transformers.utils.logging.set_verbosity(level)


def build_eval_callback(script_args, training_args):
    """The training-time evaluation callback for ``eval_file`` (None when unset)."""
    if not script_args.eval_file:
        return None
    from .evaluation import AMPOEvalCallback
    from .pool import SYSTEM_PROMPT

    system_prompt = script_args.system_prompt if script_args.system_prompt is not None else SYSTEM_PROMPT
    return AMPOEvalCallback(
        script_args.eval_file,
        every_n_steps=script_args.eval_file_steps,
        num_samples=script_args.eval_file_num_samples,
        max_new_tokens=script_args.eval_file_max_new_tokens or training_args.max_completion_length,
        temperature=script_args.eval_file_temperature,
        max_problems=script_args.eval_file_max_problems,
        system_prompt=system_prompt,
    )


def main(argv: Sequence[str] | None = None):
    """Entry point of `scripts/train.py`. Returns the trainer (after training and saving)."""
    script_args, training_args, model_args, dataset_args, recipe = parse_args(argv)
    return run(script_args, training_args, model_args, dataset_args, recipe)


def run(script_args, training_args, model_args, dataset_args=None, recipe: Recipe | None = None):
    """Train with already-parsed arguments (see :func:`main`)."""
    recipe = recipe or Recipe()
    started = time.time()
    _configure_logging(training_args)
    if script_args.torch_num_threads:
        import torch

        torch.set_num_threads(script_args.torch_num_threads)

    # 1. Everything that needs no model: rewards, loggers, data, checks.
    reward_funcs = resolve_rewards(script_args.reward_funcs)
    default_reward_weights(script_args, training_args)
    check_report_to(training_args.report_to)

    demo_run = None
    if script_args.demo:
        from . import demo

        demo_run = demo.prepare(script_args, training_args, model_args)
        dataset, tokenizer = demo_run.train_dataset, demo_run.tokenizer
    else:
        if not model_args.model_name_or_path:
            raise ValueError("model_name_or_path is required (a hub id or a local directory).")
        if model_args.model_name_or_path == "tiny":
            from .tiny import tiny_model_path

            model_args.model_name_or_path = str(tiny_model_path())
        tokenizer = None
        if script_args.max_prompt_length is not None:
            tokenizer = _load_tokenizer(model_args, training_args)
        dataset = load_training_dataset(
            script_args,
            dataset_args,
            tokenizer=tokenizer,
            pool_column=training_args.guidance_pool_column,
            answer_column=training_args.answer_column,
            chat_template_kwargs=training_args.chat_template_kwargs,
        )
    plan = validate_setup(dataset, reward_funcs, script_args, training_args)
    logger.info("Batch layout: %s.", plan.describe())
    logger.info("Training rows: %d; columns: %s.", len(dataset), dataset.column_names)

    # 2. The model (loaded by the trainer from model_name_or_path, with PEFT / quantization from ModelConfig).
    from trl import get_peft_config, get_quantization_config

    from .trainer import AMPOTrainer

    quantization_config = get_quantization_config(model_args)
    _set_model_init_kwargs(model_args, training_args)
    callbacks = [cb for cb in (build_eval_callback(script_args, training_args),) if cb is not None]
    trainer = AMPOTrainer(
        model=model_args.model_name_or_path,
        reward_funcs=reward_funcs,
        args=training_args,
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=callbacks or None,
        peft_config=get_peft_config(model_args),
        quantization_config=quantization_config,
    )
    for callback in callbacks:
        if hasattr(callback, "attach"):
            callback.attach(trainer)
    extra_sections: list[str] = []
    attach_model_card_extras(trainer, lambda: model_card_extras(recipe, plan, script_args, extra_sections))
    if demo_run is not None:
        demo_run.before_training(trainer)

    # 3. Train, save, card, hub.
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_model(training_args.output_dir)
    trainer.save_state()
    if demo_run is not None:
        summary = demo_run.after_training(trainer, started)
        extra_sections.append("## Demo summary\n\n```text\n" + summary + "\n```")
    write_model_card(trainer, script_args)
    trainer.accelerator.print(f"Model, tokenizer, trainer state and model card saved to {training_args.output_dir}.")
    if training_args.push_to_hub:
        trainer.push_to_hub(dataset_name=script_args.dataset_name)
        trainer.accelerator.print(f"Pushed to https://huggingface.co/{trainer.hub_model_id}.")
    if hasattr(trainer, "end"):
        trainer.end()
    return trainer


def _load_tokenizer(model_args, training_args):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(
        model_args.model_name_or_path,
        revision=model_args.model_revision,
        trust_remote_code=training_args.trust_remote_code,
    )


# ------------------------------------------------------------------------------------------------ SFT baseline
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


def make_sft_parser():
    """TrlParser over (`SFTScriptArguments`, `SFTConfig`, `ModelConfig`, `DatasetMixtureConfig`)."""
    from trl import DatasetMixtureConfig, ModelConfig, SFTConfig, TrlParser

    return TrlParser((SFTScriptArguments, SFTConfig, ModelConfig, DatasetMixtureConfig))


def load_sft_dataset(script_args, dataset_args=None):
    """SFT pairs: a dataset that already has ``messages`` is used as is; otherwise the guidance pool is expanded to
    one conversation per (question, teacher solution) (`ampo_trl.pool.export_sft_dataset`, spec section 2)."""
    from .pool import export_sft_dataset

    if script_args.max_prompt_length is not None:
        raise ValueError("max_prompt_length is for RL; for SFT set max_length (SFTConfig) instead.")
    raw_columns = None
    if not (dataset_args is not None and dataset_args.datasets):
        raw = load_raw_dataset(script_args, dataset_args)
        raw_columns = _column_names(raw)
    if raw_columns is not None and "messages" in raw_columns:
        dataset = raw
    else:
        pool = load_training_dataset(
            script_args, dataset_args, pool_column=script_args.pool_column, answer_column=script_args.answer_column
        )
        if script_args.pool_column not in pool.column_names:
            raise ValueError(
                f"SFT needs either a 'messages' column or a guidance pool ('{script_args.pool_column}'); the data has "
                f"{pool.column_names}."
            )
        dataset = export_sft_dataset(pool, system_prompt=None, pool_column=script_args.pool_column)
    if script_args.completion_only:

        def split(row):
            messages = row["messages"]
            if not messages or messages[-1]["role"] != "assistant":
                raise ValueError("Every SFT conversation must end with an assistant message.")
            return {"prompt": messages[:-1], "completion": messages[-1:]}

        dataset = dataset.map(split, remove_columns=["messages"], desc="prompt/completion")
    return dataset


def sft_main(argv: Sequence[str] | None = None):
    """Entry point of `scripts/train_sft.py` (the paper's SFT baseline: LoRA on all linear layers)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    recipe = Recipe(argv=list(argv))
    if "--config" in argv:
        recipe.path = argv[argv.index("--config") + 1]
        recipe.text = Path(recipe.path).read_text(encoding="utf-8")
    script_args, training_args, model_args, dataset_args = make_sft_parser().parse_args_and_config(argv)
    _configure_logging(training_args)
    check_report_to(training_args.report_to)
    dataset = load_sft_dataset(script_args, dataset_args)
    logger.info("SFT rows: %d; columns: %s.", len(dataset), dataset.column_names)

    from trl import SFTTrainer, get_peft_config, get_quantization_config

    _set_model_init_kwargs(model_args, training_args)
    model_name = model_args.model_name_or_path
    if model_name == "tiny":
        from .tiny import tiny_model_path

        model_name = str(tiny_model_path())
    if not model_name:
        raise ValueError("model_name_or_path is required (a hub id or a local directory).")
    trainer = SFTTrainer(
        model=model_name,
        args=training_args,
        train_dataset=dataset,
        peft_config=get_peft_config(model_args),
        quantization_config=get_quantization_config(model_args),
    )
    attach_model_card_extras(
        trainer,
        lambda: model_card_extras(recipe, None, script_args).replace("scripts/train.py", "scripts/train_sft.py"),
    )
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_model(training_args.output_dir)
    trainer.save_state()
    if trainer.is_world_process_zero():
        trainer.create_model_card(
            model_name=Path(training_args.output_dir).name, dataset_name=script_args.dataset_name, tags=["ampo-sft"]
        )
    if training_args.push_to_hub:
        trainer.push_to_hub(dataset_name=script_args.dataset_name)
    if hasattr(trainer, "end"):
        trainer.end()
    return trainer


def config_fields() -> dict[str, set[str]]:
    """Field names of each parsed dataclass (used by the recipe tests)."""
    from trl import DatasetMixtureConfig, ModelConfig

    from .config import AMPOConfig

    return {
        cls.__name__: {f.name for f in dataclasses.fields(cls)}
        for cls in (AMPOScriptArguments, AMPOConfig, ModelConfig, DatasetMixtureConfig)
    }


__all__ = [
    "AMPOScriptArguments",
    "BatchPlan",
    "PoolDataArguments",
    "SFTScriptArguments",
    "Recipe",
    "batch_plan",
    "check_report_to",
    "load_training_dataset",
    "main",
    "make_parser",
    "parse_args",
    "plan_from_config",
    "plan_from_mapping",
    "resolve_rewards",
    "run",
    "sft_main",
    "validate_setup",
]


def _set_model_init_kwargs(model_args, training_args) -> None:
    """How the trainer loads the model from `model_name_or_path`: ModelConfig's revision, attention and dtype,
    overridden by an explicit `model_init_kwargs`; unset values are left to transformers."""
    model_init_kwargs = dict(
        revision=model_args.model_revision,
        trust_remote_code=training_args.trust_remote_code,
        attn_implementation=model_args.attn_implementation,
        dtype=model_args.dtype,
    )
    if training_args.model_init_kwargs is not None:
        model_init_kwargs.update(training_args.model_init_kwargs)
    training_args.model_init_kwargs = {k: v for k, v in model_init_kwargs.items() if v is not None}
