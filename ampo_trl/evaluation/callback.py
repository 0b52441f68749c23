"""`AMPOEvalCallback`: the evaluation protocol on a validation set during training, logged as ``eval/...``.

The metrics do not depend on the number of processes. :func:`plan_eval_batches` cuts the samples (problem i,
sample s) into generation batches from the problem list alone: sorted by prompt length (longest first, so a batch
holds similar lengths), cut every ``batch_size`` samples, each batch sampled under its own seed
``derive_seed(seed, "<problem_id>#<s>|...")`` of the problems and sample indices it holds. The batches are then
dealt to the processes round-robin (batch b to process b mod world_size). A batch is the same tensors under the same
seed whichever process generates it, so 1, 2 or 8 processes produce the same responses and the same metrics; only
``batch_size`` and ``seed`` (and the model) change them.
"""

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
from ..generation import (
    DEFAULT_TEMPERATURE,
    DEFAULT_TOP_P,
    GenerationRequest,
    TransformersBackend,
    derive_seed,
    render_prompt_ids,
)
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


def plan_eval_batches(
    samples: Sequence[tuple[int, int]],
    prompt_lengths: Sequence[int],
    problem_ids: Sequence[str],
    batch_size: int,
    seed: int,
) -> list[tuple[int, list[tuple[int, int]]]]:
    """The generation batches of an evaluation, independent of the number of processes.

    ``samples``: (problem index, sample index) pairs; ``prompt_lengths`` / ``problem_ids``: per problem. Returns
    ``(seed, samples)`` per batch: samples sorted by prompt length, longest first (ties in (problem, sample) order),
    cut every ``batch_size``; each batch's seed derived from ``seed`` and the (problem id, sample index) it holds.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    ordered = sorted(samples, key=lambda item: (-prompt_lengths[item[0]], item))
    batches = []
    for start in range(0, len(ordered), batch_size):
        chunk = ordered[start : start + batch_size]
        key = "|".join(f"{problem_ids[index]}#{sample}" for index, sample in chunk)
        batches.append((derive_seed(seed, key), chunk))
    return batches


def batches_for_rank(num_batches: int, world_size: int, rank: int) -> tuple[list[int], int]:
    """Batch indices process ``rank`` generates (round-robin), and how many it must run in all: every process makes
    the same number of ``generate`` calls (``synced_gpus`` under ZeRO-3 / FSDP needs it), so a process with one batch
    fewer repeats one as padding (its results dropped)."""
    mine = list(range(rank, num_batches, world_size))
    return mine, math.ceil(num_batches / world_size)


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

    Multi-process runs: **every process participates**, and the metrics are those of a single process (see the
    module docstring: batches and their seeds come from the problems, not from the process layout). The batches
    are dealt round-robin; a process with one batch fewer repeats one (dropped), so every process runs the same
    number of ``generate`` calls, with ``synced_gpus=True`` (forward passes in lockstep, which ZeRO-3 / FSDP need).
    Each process scores its samples, the scored samples are all-gathered, so every process computes the same
    metrics and logs them at the same step; no process waits on another's generation outside collectives.

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
        self.last_samples: list[dict[str, Any]] = []  # its scored samples (as in generations.jsonl), every process
        self._warned_no_trainer = False
        self._last_step: int | None = None
        self._prompt_ids: tuple[Any, list[list[int]]] | None = None  # (tokenizer, ids per problem), built once

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
        prompt_ids = self._problem_prompt_ids(tokenizer)
        items = [(index, s) for index, problem in enumerate(problems) for s in range(settings.samples_for(problem))]
        batches = plan_eval_batches(
            items, [len(ids) for ids in prompt_ids], [p.problem_id for p in problems], self.batch_size, settings.seed
        )
        mine, calls = batches_for_rank(len(batches), world_size, rank)
        shard: list[tuple[int, int]] = []
        generations = []
        was_training = model.training
        model.eval()
        try:
            backend = TransformersBackend(
                model, tokenizer, batch_size=self.batch_size, synced_gpus=world_size > 1, progress=False
            )
            for call in range(calls):
                padding = call >= len(mine)  # same number of generate calls on every process; results dropped
                seed, batch = batches[mine[-1] if mine else 0] if padding else batches[mine[call]]
                requests = [GenerationRequest(prompt_ids[index], 1) for index, _ in batch]
                rows = backend.generate(requests, dataclasses.replace(settings.sampling(), seed=seed))
                if not padding:
                    shard += batch
                    generations += [row[0] for row in rows]
        finally:
            if was_training:
                model.train()
        scores = score_responses(
            [g.text for g in generations],
            [problems[index].gold for index, _ in shard],
            [problems[index].scoring for index, _ in shard],
            timeout=settings.verify_timeout,
        )
        local = [
            ((index, s), _sample_record(problems[index], s, g, score))
            for (index, s), g, score in zip(shard, generations, scores)
        ]
        if world_size > 1:
            import torch.distributed as dist

            gathered: list[Any] = [None] * world_size
            dist.all_gather_object(gathered, local)
            keyed = [item for part in gathered for item in part]
        else:
            keyed = local
        samples = [record for _, record in sorted(keyed, key=lambda item: item[0])]  # (problem, sample) order
        results = compute_results([self.benchmark_set], samples, settings)
        self.last_results, self.last_samples = results, samples
        return self._flatten(results, time.time() - started)

    def _problem_prompt_ids(self, tokenizer: PreTrainedTokenizerBase) -> list[list[int]]:
        """The chat-templated prompt ids of every problem (computed once per tokenizer)."""
        if self._prompt_ids is None or self._prompt_ids[0] is not tokenizer:
            system_prompt = self.settings.system_prompt
            ids = [
                render_prompt_ids(tokenizer, build_messages(problem.messages, system_prompt))
                for problem in self.benchmark_set.problems
            ]
            self._prompt_ids = (tokenizer, ids)
        return self._prompt_ids[1]

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
