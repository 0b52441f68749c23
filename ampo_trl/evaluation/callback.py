"""`AMPOEvalCallback`: the evaluation protocol on a validation set during training, logged as ``eval/...``."""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import os
import time
import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from transformers import TrainerCallback

from ..answers import SYSTEM_PROMPT
from ..generation import DEFAULT_TEMPERATURE, DEFAULT_TOP_P, GenerationRequest, TransformersBackend, render_prompt_ids
from ..reporting import mean
from .loading import load_benchmark
from .runner import (
    DEFAULT_VERIFY_TIMEOUT,
    EvalSettings,
    _sample_record,
    build_messages,
    compute_results,
    score_responses,
)

if TYPE_CHECKING:  # pragma: no cover
    from transformers import (
        PreTrainedModel,
        PreTrainedTokenizerBase,
        Trainer,
        TrainerControl,
        TrainerState,
        TrainingArguments,
    )

logger = logging.getLogger(__name__)


def _distributed() -> tuple[int, int]:
    """(world_size, rank) of the default torch.distributed group, (1, 0) without one."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


class AMPOEvalCallback(TrainerCallback):
    """Evaluate on a validation set every ``every_n_steps`` optimizer steps during training and log ``eval/...``.

    ``eval_file_or_dataset``: a file path or short name (see :func:`resolve_benchmark_path`; ``benchmark_dir``
    as there), a ``datasets.Dataset``, a ``pandas.DataFrame`` or a list of dicts, in any format
    :func:`load_benchmark` reads. ``max_problems`` keeps the first N problems *of each benchmark*. Generation uses
    the trainer's model (eval mode, no grad, own RNG stream: training randomness is untouched) and the same
    prompts and scoring as ``scripts/evaluate.py``.

    Logged (fractions in [0, 1]): ``eval/<benchmark>/accuracy``, ``eval/<benchmark>/pass@<k>``,
    ``eval/<benchmark>/mean_length``, ``eval/<benchmark>/format_rate``, ``eval/math_avg`` / ``eval/ood_avg``
    (unweighted means over the benchmarks of each Table 1 group that are present), ``eval/mean_accuracy``,
    ``eval/mean_length``, ``eval/format_rate``, ``eval/truncation_rate``, ``eval/seconds``.

    Multi-process runs: **every process participates**. The samples are cut into equal contiguous shards (padded
    with dummy copies, so every process runs the same number of ``generate`` calls with the same batch size), each
    process generates its shard with ``synced_gpus=True`` (forward passes in lockstep, which ZeRO-3 / FSDP need),
    scores it, and the scored shards are all-gathered, so every process computes the same metrics and logs
    them at the same step; no process waits on another's generation outside collectives.

    Logging goes through ``transformers.Trainer.log`` of the attached trainer (pass ``trainer=`` or call
    :meth:`attach`), which records ``state.log_history`` and reaches the reporting integrations (W&B, TensorBoard,
    ...). The base-class method is used on purpose: ``GRPOTrainer.log`` would flush the averaged training metrics
    at this point. Without a trainer the metrics go to ``state.log_history`` and the Python logger only.
    """

    def __init__(
        self,
        eval_file_or_dataset: Any,
        every_n_steps: int,
        num_samples: int = 1,
        max_new_tokens: int = 1024,
        temperature: float = DEFAULT_TEMPERATURE,
        max_problems: int | None = None,
        *,
        top_p: float = DEFAULT_TOP_P,
        batch_size: int = 16,
        system_prompt: str | None = SYSTEM_PROMPT,
        pass_k: Sequence[int] | None = None,
        expand_repeats: bool = True,
        seed: int = 0,
        verify_timeout: float = DEFAULT_VERIFY_TIMEOUT,
        benchmark_dir: str | os.PathLike | None = None,
        metric_prefix: str = "eval",
        trainer: Any = None,
    ):
        if every_n_steps < 1:
            raise ValueError(f"every_n_steps must be >= 1, got {every_n_steps}.")
        self.every_n_steps = every_n_steps
        self.batch_size = batch_size
        self.metric_prefix = metric_prefix.rstrip("/")
        self.settings = EvalSettings(
            num_samples=num_samples,
            temperature=temperature,
            top_p=top_p,
            max_new_tokens=max_new_tokens,
            seed=seed,
            system_prompt=system_prompt,
            pass_k=list(pass_k) if pass_k else None,
            expand_repeats=expand_repeats,
            verify_timeout=verify_timeout,
        )
        self.benchmark_set = load_benchmark(
            eval_file_or_dataset, benchmark_dir=benchmark_dir, max_problems=max_problems
        )
        self.trainer = trainer
        self.history: list[dict[str, Any]] = []  # (step, metrics) of every evaluation, on every process
        self.last_results: dict[str, Any] | None = None  # full results (as in results.json) of the last evaluation
        self._warned_no_trainer = False
        self._last_step: int | None = None

    def attach(self, trainer: Trainer) -> AMPOEvalCallback:
        """Register with ``trainer`` (``trainer.add_callback``) and log through it. Returns self."""
        self.trainer = trainer
        if self not in trainer.callback_handler.callbacks:
            trainer.add_callback(self)
        return self

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs
    ) -> TrainerControl:
        if (
            state.global_step > 0
            and state.global_step % self.every_n_steps == 0
            and state.global_step != self._last_step
        ):
            self._last_step = state.global_step
            model = kwargs.get("model") if self.trainer is None else self.trainer.model
            tokenizer = kwargs.get("processing_class") if self.trainer is None else self.trainer.processing_class
            tokenizer = getattr(tokenizer, "tokenizer", tokenizer)  # a processor wraps the tokenizer
            metrics = self.evaluate(model, tokenizer)
            # Trainer.log -> CallbackHandler.on_log resets control.should_log, which would cancel the trainer's own
            # logging of this step (DefaultFlowCallback set it just before us): keep the flag as it was.
            should_log = getattr(control, "should_log", False)
            self._log(metrics, state, args)
            if hasattr(control, "should_log"):
                control.should_log = should_log
            trainer_control = getattr(self.trainer, "control", None)
            if trainer_control is not None and hasattr(trainer_control, "should_log"):
                trainer_control.should_log = should_log
        return control

    def evaluate(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> dict[str, float]:
        """Generate on the validation problems with ``model``, score, and return the metrics (every process)."""
        if model is None or tokenizer is None:
            raise ValueError(
                "AMPOEvalCallback needs the model and its tokenizer: give the trainer a processing_class "
                "(tokenizer), or attach the callback with callback.attach(trainer)."
            )
        started = time.time()
        world_size, rank = _distributed()
        settings = self.settings
        problems = self.benchmark_set.problems
        items = [(index, s) for index, problem in enumerate(problems) for s in range(settings.samples_for(problem))]
        per_process = math.ceil(len(items) / world_size)
        shard = items[rank * per_process : (rank + 1) * per_process]
        num_real = len(shard)
        shard = shard + [items[-1]] * (per_process - num_real)  # equal work everywhere; padding dropped below
        was_training = model.training
        model.eval()
        try:
            backend = TransformersBackend(
                model, tokenizer, batch_size=self.batch_size, synced_gpus=world_size > 1, progress=False
            )
            prompt_ids = {}
            for index, _ in shard:
                if index not in prompt_ids:
                    messages = build_messages(problems[index].messages, settings.system_prompt)
                    prompt_ids[index] = render_prompt_ids(tokenizer, messages)
            requests = [GenerationRequest(prompt_ids[index], 1) for index, _ in shard]
            sampling = dataclasses.replace(settings.sampling(), seed=settings.seed + 1_000_003 * rank)
            generations = [row[0] for row in backend.generate(requests, sampling)] if requests else []
        finally:
            if was_training:
                model.train()
        generations = generations[:num_real]
        shard = shard[:num_real]
        scores = score_responses(
            [g.text for g in generations],
            [problems[index].gold for index, _ in shard],
            [problems[index].scoring for index, _ in shard],
            timeout=settings.verify_timeout,
        )
        local = [
            _sample_record(problems[index], s, g, score) for (index, s), g, score in zip(shard, generations, scores)
        ]
        if world_size > 1:
            import torch.distributed as dist

            gathered: list[Any] = [None] * world_size
            dist.all_gather_object(gathered, local)
            samples = [sample for part in gathered for sample in part]
        else:
            samples = local
        results = compute_results([self.benchmark_set], samples, settings)
        self.last_results = results
        return self._flatten(results, time.time() - started)

    def _flatten(self, results: Mapping[str, Any], seconds: float) -> dict[str, float]:
        prefix = self.metric_prefix
        metrics: dict[str, float] = {}
        for key, b in results["benchmarks"].items():
            metrics[f"{prefix}/{key}/accuracy"] = b["accuracy"]
            for k, value in b["pass_at_k"].items():
                if value is not None and k != "1":
                    metrics[f"{prefix}/{key}/pass@{k}"] = value
            metrics[f"{prefix}/{key}/mean_length"] = b["mean_length"]
            metrics[f"{prefix}/{key}/format_rate"] = b["format_rate"]
        for key, group in results["groups"].items():
            if group["accuracy"] is not None:
                metrics[f"{prefix}/{key}_avg"] = group["accuracy"]
        overall = results["overall"]
        metrics[f"{prefix}/mean_accuracy"] = overall["accuracy"]
        metrics[f"{prefix}/mean_length"] = overall["mean_length"]
        metrics[f"{prefix}/format_rate"] = overall["format_rate"]
        metrics[f"{prefix}/truncation_rate"] = mean(b["truncation_rate"] for b in results["benchmarks"].values())
        metrics[f"{prefix}/seconds"] = round(seconds, 3)
        return {key: float(value) for key, value in metrics.items() if value is not None}

    def _log(self, metrics: dict[str, float], state, args) -> None:
        self.history.append({"step": state.global_step, **metrics})
        trainer = self.trainer
        if trainer is not None:
            from transformers import Trainer

            # Trainer.log, not GRPOTrainer.log: the latter would flush the running training metrics here.
            if isinstance(trainer, Trainer):
                Trainer.log(trainer, dict(metrics))
            else:
                trainer.log(dict(metrics))
            return
        if not self._warned_no_trainer:
            self._warned_no_trainer = True
            warnings.warn(
                "AMPOEvalCallback has no trainer: eval metrics go to state.log_history and the logger only, not to "
                "W&B/TensorBoard. Construct it with trainer=... or call callback.attach(trainer).",
                stacklevel=3,
            )
        state.log_history.append({**copy.deepcopy(metrics), "step": state.global_step})
        logger.info("step %d: %s", state.global_step, metrics)
