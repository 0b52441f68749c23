r"""`AMPOTrainer`: GRPO with adaptive multi-teacher guidance, as a subclass of TRL's `GRPOTrainer`.

AMPO (https://huggingface.co/papers/2510.02227). For each prompt q the policy samples G completions and they are
scored as in GRPO. A group in which no completion is correct (the *adaptive trigger*) gets guidance: k' = min(k,
|pool|) failed completions, drawn at random, are replaced by the teacher solutions of q's pool that the student
*comprehends* best, i.e. with the highest student probability of the ground-truth answer after the teacher's
reasoning. Advantages are then computed over the augmented group, and the loss is

    L = L_GRPO(on-policy rows) + L_off(teacher rows),   L_off = -A_i f(pi_theta(o_it)),  f(x) = x / (x + gamma),

aggregated per teacher sequence (see `ampo_trl.loss` for the exact weighting and its guarantees). Groups without a
trigger are plain GRPO, and with `guidance_trigger="never"` the trainer *is* `GRPOTrainer`.

This class only wires the pure logic of `ampo_trl.guidance`, `ampo_trl.comprehension`, `ampo_trl.advantages`,
`ampo_trl.loss` and `ampo_trl.micro_batches` into TRL. It overrides:

* `_calculate_rewards`: remembers the gathered rewards, from which the trigger is decided;
* `_generate_and_score_completions`: calls the parent, then replaces rows and patches the batch;
* `_prepare_inputs`: calls the parent, then regroups a batch with teacher rows into length-sorted micro-batches, each
  cut to its longest row (`length_grouping`), so long teacher rows cost their own tokens only;
* `_compute_loss`: calls the parent on the on-policy rows and adds the shaping loss of the teacher rows, reusing
  the parent's single forward pass;
* `_set_signature_columns_if_needed`: keeps the pool and answer columns.

Distributed safety: every decision is computed from gathered data with generators seeded by (seed, step, group,
prompt), so it is identical on every process; every collective and every extra forward pass (comprehension
scoring, reference log-probs of teacher rows) is made the same number of times on every process.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
from array import array
from collections import Counter, OrderedDict
from collections.abc import Sized
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from accelerate.utils import broadcast_object_list, gather_object
from datasets import IterableDataset
from transformers import ProcessorMixin
from trl import GRPOConfig, GRPOTrainer
from trl.data_utils import is_conversational
from trl.models.utils import disable_gradient_checkpointing
from trl.trainer.utils import get_config_model_id, pad, use_adapter

from .advantages import compute_advantages, weighted_total_rewards
from .answers import GOLD_ANSWER_COLUMNS, encode_teacher_texts, gold_answer_of_row, gold_column
from .comprehension import build_released_scoring_sequence, build_scoring_sequence, plan_scoring_chunks
from .config import AMPOConfig
from .errors import DataFormatError
from .guidance import (
    assign_solutions,
    choose_rows_to_replace,
    comprehension_score,
    correctness_mask,
    group_seed,
    make_generator,
    rank_candidates,
    replaceable_rows,
    requested_replacements,
    rows_held_by_process,
)
from .loss import aggregate_off_policy_loss, micro_batch_normalizer, off_policy_per_token_loss
from .micro_batches import group_by_length, padding_stats, per_token_keys
from .pool import parse_pool, validate_pool_dataset
from .rewards import POLICY_SOURCE, format_reward
from .vllm_scoring import fits, gold_logprobs_from_engine, gold_logprobs_from_server, server_max_model_len

logger = logging.getLogger(__name__)


TEACHER_TOKEN_CACHE_SIZE = 4096  # solutions; at ~12 kB per 3k-token solution, about 50 MB at most
TEACHER_REWARD_CACHE_SIZE = 65536  # scored solutions (a few reward values each): all of the paper's 34k fit

# Per-token fields of TRL 1.16's batch dict, and the value a teacher row gets in each: a teacher row did not come
# from the sampler, so it has no sampling log-probs and no importance-sampling correction (ratio 1).
# `ref_per_token_logps` is recomputed for teacher rows; widening pads every field with the value given here.
_PER_TOKEN_FILL = {
    "completion_ids": None,  # pad token id, filled at run time
    "completion_mask": 0,
    "old_per_token_logps": 0.0,  # placeholder: teacher rows are masked out of the ratio-based loss
    "sampling_per_token_logps": 0.0,  # ignored for teacher rows
    "ref_per_token_logps": 0.0,
    "importance_sampling_ratio": 1.0,  # no vLLM correction for tokens the sampler did not produce
    "tool_mask": 1,
}


@dataclass(frozen=True)
class _Candidate:
    teacher: str
    text: str
    completion_ids: tuple[int, ...]  # teacher tokens + EOS
    quality_score: float | None = None


@dataclass(frozen=True)
class _Replacement:
    row: int  # global row index in the generation batch
    group: int
    candidate: _Candidate
    score: float | None


class AMPOTrainer(GRPOTrainer):
    """Trainer for Adaptive Multi-Guidance Policy Optimization (AMPO), a drop-in replacement for `GRPOTrainer`.

    Takes the same arguments as `GRPOTrainer`; `args` should be an [`AMPOConfig`] (a `GRPOConfig` is converted
    with AMPO's defaults). The training dataset needs, besides `prompt`, a pool column (default
    `teacher_solutions`: a list of `{"teacher", "text"}`) and an answer column (default `answer`).

    Example:

    ```python
    >>> from ampo_trl import AMPOConfig, AMPOTrainer
    >>> from ampo_trl.rewards import accuracy_reward, format_reward

    >>> trainer = AMPOTrainer(
    ...     model="Qwen/Qwen2.5-1.5B-Instruct",
    ...     reward_funcs=[accuracy_reward, format_reward],
    ...     args=AMPOConfig(output_dir="out", reward_weights=[0.9, 0.1]),
    ...     train_dataset=dataset,  # columns: prompt, answer, teacher_solutions
    ... )
    >>> trainer.train()
    ```
    """

    _tag_names = ["trl", "grpo", "ampo"]
    _name = "AMPO"
    _paper = {
        "title": "More Than One Teacher: Adaptive Multi-Guidance Policy Optimization for Diverse Exploration",
        "id": "2510.02227",
        "citation": """\
@article{yuan2025ampo,
    title   = {{More Than One Teacher: Adaptive Multi-Guidance Policy Optimization for Diverse Exploration}},
    author  = {Xiaoyang Yuan and Yujuan Ding and Yi Bin and Wenqi Shao and Jinyu Cai and Jingkuan Song and Yang Yang and Heng Tao Shen},
    year    = 2025,
    journal = {arXiv preprint arXiv:2510.02227}
}""",
    }

    def __init__(
        self,
        model,
        reward_funcs=None,
        args: AMPOConfig | GRPOConfig | None = None,
        train_dataset=None,
        processing_class=None,
        **kwargs,
    ):
        if args is None:
            model_name = model if isinstance(model, str) else get_config_model_id(model.config)
            args = AMPOConfig(f"{model_name.split('/')[-1]}-AMPO")
        elif not isinstance(args, AMPOConfig):
            args = _to_ampo_config(args)
        self._ampo_guidance_enabled = args.guidance_trigger != "never" and _has_pool_column(train_dataset, args)
        if self._ampo_guidance_enabled:
            for unsupported in ("tools", "environment_factory", "rollout_func"):
                if kwargs.get(unsupported) is not None:
                    raise ValueError(
                        f"AMPO guidance does not support `{unsupported}`: teacher solutions are single-turn texts "
                        "scored against the prompt tokens TRL builds itself. Set guidance_trigger='never' to train "
                        f"with `{unsupported}` (plain GRPO)."
                    )
            if train_dataset is not None:  # checked before the model loads: bad data fails in seconds
                processing_class = processing_class or _default_processing_class(model, args)
                _check_training_data(train_dataset, args, processing_class, _uses_math_verify(reward_funcs))
        super().__init__(
            model, reward_funcs, args=args, train_dataset=train_dataset, processing_class=processing_class, **kwargs
        )

        self._last_gathered_rewards: torch.Tensor | None = None
        # Token ids of recently used teacher solutions (compact int32 arrays, least recently used dropped first).
        self._teacher_token_cache: OrderedDict[str, array] = OrderedDict()
        # Reward-function values of scored teacher solutions, by (prompt, answer, text): identical on every process.
        self._teacher_reward_cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._vllm_scoring_limit: int | None = None  # the vLLM engine's max_model_len, read on first use
        self._vllm_scoring_limit_read = False
        self._teachers_seen: dict[str, None] = {}  # ordered set, for stable per-teacher metric names
        self._warned: set[str] = set()
        # Decisions of the latest generation batch (global row, group, teacher, score): identical on every process.
        self.last_guidance: list[dict] = []
        if self._ampo_guidance_enabled:
            if self._is_vlm:
                raise ValueError(_VLM_MESSAGE)
            self._correctness_index = self._resolve_correctness_reward()

    # ------------------------------------------------------------------------------------------------ set-up checks
    def _resolve_correctness_reward(self) -> int:
        names = self.reward_func_names
        name = self.args.correctness_reward
        if name is None:
            if names[0] == "format_reward":
                raise ValueError(
                    "The first reward function decides correctness (the adaptive trigger), but it is format_reward. "
                    "Put the accuracy reward first or set correctness_reward."
                )
            return 0
        if name not in names:
            raise ValueError(
                f"correctness_reward={name!r} is not one of the reward functions {names}. Use the "
                "name of the function that returns 1 for a correct answer (e.g. 'accuracy_reward')."
            )
        return names.index(name)

    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        for column in (self.args.guidance_pool_column, self.args.answer_column, *GOLD_ANSWER_COLUMNS):
            if column not in self._signature_columns:
                self._signature_columns.append(column)

    # ---------------------------------------------------------------------------------------------- generation side
    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self._last_gathered_rewards = rewards_per_func  # gathered over processes: the trigger is decided from it
        return rewards_per_func

    def _generate_and_score_completions(self, inputs):
        output = super()._generate_and_score_completions(inputs)
        if not self._ampo_guidance_enabled:
            return output  # exactly GRPOTrainer's batch and logs
        if not self.model.training:
            self._log_sources([POLICY_SOURCE] * len(inputs) * self.accelerator.num_processes)  # a rectangular table
            return output
        return self._apply_guidance(inputs, output, self._last_gathered_rewards)

    def _apply_guidance(self, inputs, output, rewards_per_func):
        """Replace failed rows of triggered groups by teacher solutions and patch the batch (see class docstring)."""
        metrics = self._metrics["train"]
        num_generations = self.num_generations
        num_local = len(inputs)
        first_global_row = self.accelerator.process_index * num_local
        num_groups = rewards_per_func.size(0) // num_generations
        generation = self._generation_key()

        correct = correctness_mask(rewards_per_func[:, self._correctness_index], self.args.correctness_threshold)
        grouped_correct = correct.view(num_groups, num_generations)
        hybrid_draws = (
            torch.tensor(
                [
                    torch.rand(1, generator=make_generator(group_seed(*generation, g, "hybrid"))).item()
                    for g in range(num_groups)
                ]
            )
            if self.args.guidance_trigger == "hybrid"
            else None
        )
        requested = requested_replacements(
            correct.cpu(),
            num_generations,
            self.args.guidance_trigger,
            self.args.num_replacements,
            hybrid_draws=hybrid_draws,
            hybrid_probability=self.args.hybrid_trigger_probability,
        )
        metrics["ampo/all_fail_fraction"].append((grouped_correct.sum(1) == 0).float().mean().item())
        metrics["ampo/all_correct_fraction"].append(grouped_correct.all(1).float().mean().item())
        metrics["ampo/triggered_group_fraction"].append((requested > 0).float().mean().item())
        triggered = [g for g in range(num_groups) if requested[g] > 0]

        replacements: list[_Replacement] = []
        counts = Counter()
        scores_seen: list[float] = []
        if triggered:  # identical on every process, so the collectives below are entered by all or by none
            group_rows = self._gather_group_rows(inputs, triggered, first_global_row)
            candidates = {g: self._usable_candidates(group_rows[g], g, counts) for g in triggered}
            if self.args.require_verified_teachers:
                candidates = self._verified_candidates(group_rows, candidates, counts)
            need_scores = [
                g
                for g in triggered
                if self.args.guidance_selection == "comprehension" and len(candidates[g]) > requested[g]
            ]
            scores = self._score_candidates(group_rows, candidates, need_scores, counts)
            scores_seen = [s for g in need_scores for s in scores[g]]
            for g in triggered:
                replacements.extend(
                    self._select(g, group_rows[g], candidates[g], scores.get(g), int(requested[g]), grouped_correct[g])
                )
        metrics["ampo/guided_group_fraction"].append(len({r.group for r in replacements}) / num_groups)
        metrics["ampo/replaced_rows"].append(float(len(replacements)))
        metrics["ampo/replaced_row_fraction"].append(len(replacements) / rewards_per_func.size(0))
        skip_keys = ["empty_pool_groups", "skipped_too_long", "skipped_empty_text", "skipped_unverified"]
        if self.args.comprehension_backend == "vllm":
            skip_keys.append("skipped_scoring_too_long")
        for key in skip_keys:
            metrics[f"ampo/{key}"].append(float(counts[key]))
        metrics["ampo/scoring_forwards"].append(float(counts["scoring_forwards"]))
        self._log_score_stats(scores_seen, [r.score for r in replacements if r.score is not None])
        self._warn_about_skips(counts)

        self.last_guidance = [
            {"row": r.row, "group": r.group, "teacher": r.candidate.teacher, "score": r.score} for r in replacements
        ]
        sources = [POLICY_SOURCE] * rewards_per_func.size(0)
        for replacement in replacements:
            sources[replacement.row] = replacement.candidate.teacher
        self._log_teacher_shares(replacements)
        if not replacements:
            self._log_sources(sources)
            return output

        teacher_rewards = self._teacher_rewards(
            [(group_rows[r.group], r.candidate) for r in replacements], cached=self.args.require_verified_teachers
        )
        new_rewards = rewards_per_func.clone()
        is_teacher_global = torch.zeros(rewards_per_func.size(0), dtype=torch.bool, device=rewards_per_func.device)
        for replacement, reward in zip(replacements, teacher_rewards, strict=True):
            new_rewards[replacement.row] = reward
            is_teacher_global[replacement.row] = True
        advantages, _ = compute_advantages(
            new_rewards,
            self.reward_weights,
            num_generations,
            scale_rewards=self.scale_rewards,
            multi_objective_aggregation=self.multi_objective_aggregation,
            reward_floor=self.args.teacher_reward_floor,
            floor_mask=is_teacher_global,
        )
        output["advantages"] = advantages[first_global_row : first_global_row + num_local]

        teacher_totals = weighted_total_rewards(teacher_rewards, self.reward_weights)
        metrics["ampo/teacher_reward_mean"].append(torch.nanmean(teacher_totals).item())
        teacher_correct = correctness_mask(
            teacher_rewards[:, self._correctness_index], self.args.correctness_threshold
        )
        metrics["ampo/teacher_incorrect_fraction"].append(1.0 - teacher_correct.float().mean().item())
        metrics["ampo/reward_with_guidance"].append(
            torch.nanmean(weighted_total_rewards(new_rewards, self.reward_weights)).item()
        )

        held = rows_held_by_process([r.row for r in replacements], self.accelerator.process_index, num_local)
        local = {local_row: replacements[position] for local_row, position in held.items()}
        self._splice_teacher_rows(output, local)
        self._patch_completion_logs(replacements, group_rows, new_rewards, advantages)
        self._log_sources(sources)
        return output

    def _generation_key(self) -> tuple[int, int, int]:
        """(seed, optimizer step, micro-step within it): the same on every process, different for every generation
        batch (TRL may generate several per optimizer step), and the same after resuming from a checkpoint (a
        resumed run restarts at an optimizer-step boundary, where the micro-step index is 0 in both runs)."""
        return self.args.seed, self.state.global_step, self._step % self.args.gradient_accumulation_steps

    def _gather_group_rows(self, inputs, groups, first_global_row) -> dict[int, dict]:
        """Every process gets the dataset row of every triggered group (sent by the process holding its first row)."""
        num_generations = self.num_generations
        local_rows = range(first_global_row, first_global_row + len(inputs))
        payload = [
            (g, inputs[g * num_generations - first_global_row]) for g in groups if g * num_generations in local_rows
        ]
        return dict(gather_object(payload))

    def _usable_candidates(self, row: dict, group: int, counts: Counter) -> list[_Candidate]:
        pool_column = self.args.guidance_pool_column
        try:
            # A row without the column (a streaming dataset whose columns were unknown up front) has no teachers.
            solutions = parse_pool(row.get(pool_column), column=pool_column)
        except DataFormatError as error:
            raise DataFormatError(f"{error} (prompt: {str(row.get('prompt'))[:200]!r})") from None
        usable = []
        max_length = self.args.effective_max_teacher_length
        for solution in solutions:
            if not solution.text.strip():
                counts["skipped_empty_text"] += 1
                continue
            token_ids = self._teacher_tokens(solution.text)
            if len(token_ids) > max_length:
                counts["skipped_too_long"] += 1
                continue
            usable.append(_Candidate(solution.teacher, solution.text, token_ids, quality_score=solution.quality_score))
        if not usable:
            counts["empty_pool_groups"] += 1
        return usable

    def _teacher_tokens(self, text: str) -> tuple[int, ...]:
        cached = self._teacher_token_cache.get(text)
        if cached is None:
            # The student's tokenizer and its EOS: a teacher row must look like a completion the student could sample.
            (ids,) = encode_teacher_texts(self._tokenizer, [text])
            cached = array("i", [*ids, self._tokenizer.eos_token_id])
            self._teacher_token_cache[text] = cached
            if len(self._teacher_token_cache) > TEACHER_TOKEN_CACHE_SIZE:
                self._teacher_token_cache.popitem(last=False)
        else:
            self._teacher_token_cache.move_to_end(text)
        return tuple(cached)

    def _select(self, group, row, candidates, scores, requested, group_correct) -> list[_Replacement]:
        count = min(requested, len(candidates))
        if count == 0:
            return []
        seed_parts = (*self._generation_key(), group, str(row.get("prompt")))
        lengths = [len(c.completion_ids) for c in candidates]
        ranking = rank_candidates(
            self.args.guidance_selection,
            lengths,
            scores=scores if scores is not None else [0.0] * len(candidates),
            generator=make_generator(group_seed(*seed_parts, "selection")),
            tie_break=self.args.comprehension_tie_break,
            qualities=[c.quality_score for c in candidates],
        )
        replaceable = replaceable_rows(group_correct.cpu(), self.args.guidance_trigger)
        offsets = choose_rows_to_replace(replaceable, count, make_generator(group_seed(*seed_parts, "rows")))
        ranks = assign_solutions(offsets, self.args.teacher_assignment)
        first_row = group * self.num_generations
        return [
            _Replacement(
                row=first_row + offset,
                group=group,
                candidate=candidates[ranking[rank]],
                score=None if scores is None else float(scores[ranking[rank]]),
            )
            for offset, rank in zip(offsets, ranks, strict=True)
        ]

    @torch.no_grad()
    def _score_candidates(self, group_rows, candidates, groups, counts) -> dict[int, list[float]]:
        """Comprehension scores of every candidate of `groups`, computed in shards across processes."""
        if not groups:
            return {}
        prompt_ids, _, _ = self._tokenize_prompts([group_rows[g]["prompt"] for g in groups])
        entries = []  # (group, candidate index, ScoringSequence or None, format score of the teacher text)
        for g, ids in zip(groups, prompt_ids, strict=True):
            # The same normalisation as the accuracy reward: numbers, lists, {"ground_truth": ...}, "... #### 42".
            answer = gold_answer_of_row(group_rows[g], self.args.answer_column)
            prompt_text = self._tokenizer.decode(ids) if self.args.comprehension_sequence == "released" else None
            for index, candidate in enumerate(candidates[g]):
                if prompt_text is not None:
                    sequence = build_released_scoring_sequence(prompt_text, candidate.text, answer, self._tokenizer)
                else:
                    sequence = build_scoring_sequence(
                        ids, candidate.text, answer, self._tokenizer, self._tokenizer.eos_token_id
                    )
                entries.append((g, index, sequence, format_reward([candidate.text])[0]))
        scorable = [i for i, entry in enumerate(entries) if entry[2] is not None]
        sequences = [entries[i][2] for i in scorable]
        if self.args.comprehension_backend == "vllm":
            gold_logprobs = self._gold_logprobs_from_vllm(sequences, counts)
        else:
            gold_logprobs = self._gold_logprobs_from_trainer(sequences, counts)
        scores: dict[int, list[float]] = {g: [0.0] * len(candidates[g]) for g in groups}
        for g, index, _, format_score in entries:
            # Without an <answer> tag the gold cannot be placed: only the format term remains (0 by default).
            scores[g][index] = self.args.comprehension_format_weight * format_score
        for i, logprobs in zip(scorable, gold_logprobs, strict=True):
            g, index, _, format_score = entries[i]
            if logprobs is not None:  # None: too long for the vLLM engine, counted in ampo/skipped_scoring_too_long
                scores[g][index] = self._comprehension(torch.tensor(logprobs), format_score)
        return scores

    def _comprehension(self, answer_logps: torch.Tensor, format_score: float) -> float:
        return comprehension_score(
            answer_logps.float(),
            mean=self.args.comprehension_mean,
            format_score=format_score,
            format_weight=self.args.comprehension_format_weight,
            round_to_bf16=self.args.comprehension_round_to_bf16,
        )

    def _gold_logprobs_from_trainer(self, sequences, counts) -> list[list[float]]:
        """Gold-token log-probs from the policy's own forward passes, planned over processes (`plan_scoring_chunks`):
        each sequence is scored on one process, and one gather gives every process all of them."""
        plan = plan_scoring_chunks(
            [len(s.input_ids) for s in sequences], self.accelerator.num_processes, self.args.comprehension_token_budget
        )
        local_chunks = plan[self.accelerator.process_index]
        local = {}
        for chunk in local_chunks:
            for i, logprobs in zip(chunk, self._scoring_forward([sequences[i] for i in chunk]), strict=True):
                local[i] = logprobs
        counts["scoring_forwards"] += len(local_chunks)
        gathered = {}
        for shard in gather_object([local]):
            gathered.update(shard)
        return [gathered[i] for i in range(len(sequences))]

    @torch.no_grad()
    def _scoring_forward(self, sequences) -> list[list[float]]:
        """Per sequence, the raw (temperature 1) log-probs of its gold-answer tokens, from one no-grad forward pass.

        Sequences are left-padded so that every gold answer sits near the end, and logits are kept only for the last
        columns that hold a gold token: memory stays rows x (gold + tail) x vocabulary. Scores are defined at
        temperature 1, as vLLM computes prompt log-probs (see `ampo_trl.vllm_scoring`): comprehension is a property
        of the model, not of the sampling temperature. With no sequence, a dummy two-token pass runs: every process
        must run as many forwards as the busiest one, because under DeepSpeed ZeRO-3 each forward is a collective.
        """
        eos = self._tokenizer.eos_token_id
        rows = [torch.tensor(s.input_ids) for s in sequences] or [torch.tensor([eos, eos])]
        device = self.accelerator.device
        input_ids = pad(rows, padding_value=self._tokenizer.pad_token_id, padding_side="left").to(device)
        attention_mask = pad([torch.ones_like(r) for r in rows], padding_value=0, padding_side="left").to(device)
        width = input_ids.size(1)
        # Column j of the kept logits predicts padded position width - keep + j + 1.
        keep = max((len(s.input_ids) - s.answer_start for s in sequences), default=1) + 1
        with disable_gradient_checkpointing(self.model, self.args.gradient_checkpointing_kwargs):
            with self.accelerator.autocast():
                logits = self.model(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=keep).logits
        logps = logits.float().log_softmax(-1)
        gold = []
        for row, sequence in enumerate(sequences):
            padding = width - len(sequence.input_ids)
            positions = torch.arange(sequence.answer_start, sequence.answer_end, device=device)
            columns = padding + positions - 1 - (width - keep)
            gold.append(logps[row, columns, input_ids[row, padding + positions]].tolist())
        return gold

    def _gold_logprobs_from_vllm(self, sequences, counts) -> list[list[float] | None]:
        """Gold-token log-probs from TRL's vLLM engine (server or colocate); None for a sequence too long for it."""
        limit = self._vllm_max_model_len()
        fitting = [i for i, s in enumerate(sequences) if fits(len(s.input_ids), limit)]
        counts["skipped_scoring_too_long"] += len(sequences) - len(fitting)
        to_score = [sequences[i] for i in fitting]
        if self.args.vllm_mode == "server":
            scored = self._gold_logprobs_from_vllm_server(to_score)
        else:
            scored = self._gold_logprobs_from_vllm_engine(to_score)
        gold: list[list[float] | None] = [None] * len(sequences)
        for i, logprobs in zip(fitting, scored, strict=True):
            gold[i] = logprobs
        return gold

    def _gold_logprobs_from_vllm_server(self, sequences) -> list[list[float]]:
        """The main process asks the server (the only process with a client); the answer or the error is broadcast,
        so every process continues with the same scores or raises the same error: never a hang. The server holds the
        current weights: TRL syncs them before generating this very batch."""
        outcome = [None]
        if self.accelerator.is_main_process:
            try:
                outcome = [
                    (
                        "ok",
                        gold_logprobs_from_server(
                            self.vllm_generation.vllm_client,
                            sequences,
                            self.args.comprehension_vllm_chunk_size,
                            self.args.comprehension_vllm_max_concurrent_requests,
                        ),
                    )
                ]
            except Exception as error:  # noqa: BLE001 - any failure must reach every process, not only this one
                outcome = [("error", f"{type(error).__name__}: {error}")]
        status, value = broadcast_object_list(outcome)[0]
        if status == "error":
            raise RuntimeError(
                f"Comprehension scoring on the vLLM server failed on the main process: {value}. Check the server, "
                "or score with the trainer's forward passes (comprehension_backend='trainer')."
            )
        return value

    def _gold_logprobs_from_vllm_engine(self, sequences) -> list[list[float]]:
        """Colocate mode: every tensor-parallel group of processes scores its share of the sequences on its engine (a
        group's processes call the engine together with the same inputs, as TRL does), then one gather gives every
        process all the scores."""
        generation = self.vllm_generation
        group_size = getattr(generation, "tensor_parallel_size", 1) or 1
        num_groups = self.accelerator.num_processes // group_size
        group = self.accelerator.process_index // group_size
        share = [i for i in range(len(sequences)) if i % num_groups == group]
        with _awake_engine(generation):
            scored = gold_logprobs_from_engine(
                generation.llm, [sequences[i] for i in share], self.args.comprehension_vllm_chunk_size
            )
        gathered = {}
        for local in gather_object([dict(zip(share, scored, strict=True))]):
            for i, logprobs in local.items():
                gathered.setdefault(i, logprobs)  # a group's processes computed the same values: keep one
        return [gathered[i] for i in range(len(sequences))]

    def _vllm_max_model_len(self) -> int | None:
        """The longest sequence the vLLM engine accepts: `comprehension_max_length`, else what the engine reports
        (read once; in server mode by the main process and broadcast)."""
        if self.args.comprehension_max_length is not None:
            return self.args.comprehension_max_length
        if not self._vllm_scoring_limit_read:
            self._vllm_scoring_limit_read = True
            if self.args.vllm_mode == "server":
                limit = [None]
                if self.accelerator.is_main_process:
                    try:
                        limit = [server_max_model_len(self.vllm_generation.vllm_client)]
                    except Exception as error:  # noqa: BLE001 - reported below, scoring still runs
                        logger.warning("Could not read max_model_len from the vLLM server: %s", error)
                self._vllm_scoring_limit = broadcast_object_list(limit)[0]
            else:
                self._vllm_scoring_limit = self.vllm_generation.llm.llm_engine.model_config.max_model_len
            if self._vllm_scoring_limit is None:
                logger.warning(
                    "The vLLM engine's max_model_len is unknown: scoring sequences are sent whatever their length. Set "
                    "comprehension_max_length to the server's --max-model-len to skip those it would refuse."
                )
        return self._vllm_scoring_limit

    def _verified_candidates(self, group_rows, candidates, counts) -> dict[int, list[_Candidate]]:
        """The candidates the correctness reward accepts; the others are dropped and counted (`skipped_unverified`)."""
        pairs = [(group_rows[g], candidate) for g in candidates for candidate in candidates[g]]
        rewards = self._teacher_rewards(pairs, cached=True) if pairs else None
        verdicts = iter(
            correctness_mask(rewards[:, self._correctness_index], self.args.correctness_threshold).tolist()
            if rewards is not None
            else []
        )
        verified = {}
        for g, group_candidates in candidates.items():
            verified[g] = [candidate for candidate in group_candidates if next(verdicts)]
            counts["skipped_unverified"] += len(group_candidates) - len(verified[g])
            if group_candidates and not verified[g]:
                counts["empty_pool_groups"] += 1
        return verified

    def _teacher_rewards(self, pairs: list[tuple[dict, _Candidate]], cached: bool) -> torch.Tensor:
        """Reward-function values (P, F) of (dataset row, teacher solution) pairs scored as completions of the row.

        With ``cached``, each solution is scored once and remembered by (prompt, answer, text); the cache is filled
        from gathered values in the same order on every process, so it is identical everywhere.
        """
        if not cached:
            return self._score_teacher_texts(pairs)
        keys = [_teacher_key(row, candidate, self.args.answer_column) for row, candidate in pairs]
        missing = list(dict.fromkeys(key for key in keys if key not in self._teacher_reward_cache))
        if missing:  # identical on every process: all of them score, or none
            first = {key: pair for key, pair in zip(keys, pairs)}
            for key, rewards in zip(missing, self._score_teacher_texts([first[key] for key in missing])):
                self._teacher_reward_cache[key] = rewards
                if len(self._teacher_reward_cache) > TEACHER_REWARD_CACHE_SIZE:
                    self._teacher_reward_cache.popitem(last=False)
        rewards = []
        for key in keys:
            self._teacher_reward_cache.move_to_end(key)
            rewards.append(self._teacher_reward_cache[key])
        return torch.stack(rewards)

    def _score_teacher_texts(self, pairs: list[tuple[dict, _Candidate]]) -> torch.Tensor:
        """Reward-function values (P, F) of teacher solutions, computed in equal shards on every process."""
        num_processes, process_index = self.accelerator.num_processes, self.accelerator.process_index
        rows_per_process = math.ceil(len(pairs) / num_processes)
        shard = pairs[process_index * rows_per_process : (process_index + 1) * rows_per_process]
        shard = shard + [pairs[0]] * (rows_per_process - len(shard))  # dummies keep the gather shapes equal
        inputs, prompts, completions, completion_ids = [], [], [], []
        for row, candidate in shard:
            row = {**row, "completion_source": candidate.teacher}
            inputs.append(row)
            prompts.append(row["prompt"])
            completions.append(self._as_completion(row["prompt"], candidate.text))
            completion_ids.append(list(candidate.completion_ids))
        # The parent's method, not this class's override: these rows must not replace the batch's gathered rewards.
        gathered = super()._calculate_rewards(inputs, prompts, completions, completion_ids)
        # Reward functions may log extra columns or metrics through the trainer; these rows are not in the table.
        self._pending_extra_logs.clear()
        self._pending_metrics.clear()
        return gathered[: len(pairs)]  # shards are contiguous, so the gather restores the original order

    def _splice_teacher_rows(self, output, local_replacements: dict[int, _Replacement]):
        """Write teacher tokens into this process's rows and patch every per-token field for them (see `_PER_TOKEN_FILL`)."""
        device = self.accelerator.device
        completion_ids = output["completion_ids"]
        num_rows, width = completion_ids.shape
        # Widths may differ between processes (as in TRL): forwards only need the same count, not the same shape.
        new_width = max([width, *(len(r.candidate.completion_ids) for r in local_replacements.values())])
        if self.pad_to_multiple_of:
            new_width = math.ceil(new_width / self.pad_to_multiple_of) * self.pad_to_multiple_of
        fills = {**_PER_TOKEN_FILL, "completion_ids": self._tokenizer.pad_token_id}
        for key in per_token_keys(output):
            value = output[key]
            if key not in fills:
                raise RuntimeError(
                    f"AMPOTrainer does not know how to fill the per-token field '{key}' for teacher rows. This TRL "
                    "version is newer than the one ampo_trl supports; please report it."
                )
            if new_width > width:
                extra = value.new_full((num_rows, new_width - width), fills[key])
                output[key] = value = torch.cat([value, extra], dim=1)
            for local_row, replacement in local_replacements.items():
                length = len(replacement.candidate.completion_ids)
                if key == "completion_ids":
                    value[local_row] = fills[key]
                    value[local_row, :length] = torch.tensor(replacement.candidate.completion_ids, device=device)
                elif key == "completion_mask":
                    value[local_row] = 0
                    value[local_row, :length] = 1
                else:
                    value[local_row] = fills[key]
        if "importance_sampling_ratio" in output and output["importance_sampling_ratio"].size(1) == 1:
            for local_row in local_replacements:  # sequence-level vLLM correction: ratio 1 for teacher rows
                output["importance_sampling_ratio"][local_row] = 1.0

        is_teacher = torch.zeros(num_rows, dtype=torch.bool, device=device)
        is_teacher[list(local_replacements)] = True
        output["ampo_is_teacher"] = is_teacher

        if "ref_per_token_logps" in output:
            self._fill_reference_logps(output, is_teacher)

        loss_mask = output["completion_mask"]
        if "tool_mask" in output:
            loss_mask = loss_mask * output["tool_mask"]
        teacher_tokens = (loss_mask * is_teacher.unsqueeze(1)).sum()
        local_counts = torch.stack([loss_mask.sum() - teacher_tokens, loss_mask.sum()]).float()
        on_policy_tokens, all_tokens = self.accelerator.gather(local_counts.unsqueeze(0)).sum(0)
        global_rows = float(num_rows * self.accelerator.num_processes)
        if self.args.off_policy_aggregation == "sequence":
            output["num_items_in_batch"] = on_policy_tokens
            normalizer = global_rows
        elif self.args.off_policy_aggregation == "constant":  # Dr. GRPO's constant, as TRL's dr_grpo on-policy term
            output["num_items_in_batch"] = all_tokens
            normalizer = global_rows * self.max_completion_length
        else:
            output["num_items_in_batch"] = all_tokens
            normalizer = all_tokens.item()
        output["ampo_off_policy_normalizer"] = torch.tensor(max(normalizer, 1.0), device=device)

    @torch.no_grad()
    def _fill_reference_logps(self, output, is_teacher):
        """Reference log-probs of teacher tokens (beta != 0): one forward per process, a dummy row if it has none."""
        rows = is_teacher.nonzero().flatten()
        if rows.numel() == 0:  # still run one pass: under ZeRO-3 a forward is a collective
            rows = torch.tensor([0], device=is_teacher.device)
        input_ids = torch.cat([output["prompt_ids"][rows], output["completion_ids"][rows]], dim=1)
        attention_mask = torch.cat([output["prompt_mask"][rows], output["completion_mask"][rows]], dim=1)
        logits_to_keep = output["completion_ids"].size(1)
        with disable_gradient_checkpointing(self.model, self.args.gradient_checkpointing_kwargs):
            if self.ref_model is not None:
                ref_logps, _, _ = self._get_per_token_logps_and_entropies(
                    self.ref_model, input_ids, attention_mask, logits_to_keep
                )
            else:  # PEFT: the reference is the base model (adapter disabled), as in the parent
                model = self.accelerator.unwrap_model(self.model)
                with use_adapter(model, adapter_name="ref" if "ref" in model.peft_config else None):
                    ref_logps, _, _ = self._get_per_token_logps_and_entropies(
                        self.model, input_ids, attention_mask, logits_to_keep
                    )
        teacher_rows = is_teacher[rows]
        output["ref_per_token_logps"][rows[teacher_rows]] = ref_logps[teacher_rows].to(
            output["ref_per_token_logps"].dtype
        )

    # ---------------------------------------------------------------------------------------------------- loss side
    def _prepare_inputs(self, generation_batch):
        previous = self._buffered_inputs
        inputs = super()._prepare_inputs(generation_batch)
        if not self.model.training or self._buffered_inputs is previous:
            return inputs  # evaluation, or a later micro-batch of an already prepared generation batch
        if self._groups_by_length(self._buffered_inputs):
            self._buffered_inputs = group_by_length(self._buffered_inputs, self.pad_to_multiple_of)
            inputs = self._buffered_inputs[self._step % self.args.steps_per_generation]
        if self._ampo_guidance_enabled or self.args.length_grouping == "always":
            real, padded = padding_stats(self._buffered_inputs)
            self._metrics["train"]["ampo/loss_padding_ratio"].append(padded / max(real, 1))
        return inputs

    def _groups_by_length(self, micro_batches) -> bool:
        """Whether this generation batch is regrouped by length (see `length_grouping` and `ampo_trl.micro_batches`)."""
        if self._is_vlm or self.args.length_grouping == "never":
            return False
        return self.args.length_grouping == "always" or "ampo_is_teacher" in micro_batches[0]

    def _compute_loss(self, model, inputs):
        guided = "ampo_is_teacher" in inputs
        if not guided and not self.args.released_loss_scale:  # no teacher row in this generation batch: exactly GRPO
            return super()._compute_loss(model, inputs)
        num_rows = inputs["completion_ids"].size(0)
        device = inputs["completion_ids"].device
        is_teacher = inputs["ampo_is_teacher"] if guided else torch.zeros(num_rows, dtype=torch.bool, device=device)
        on_policy_inputs = dict(inputs)
        on_policy_only = (~is_teacher).unsqueeze(1).to(inputs["completion_mask"].dtype)
        # The parent multiplies its loss mask by `tool_mask`: zeroing teacher rows there removes them from every
        # on-policy term (ratio loss, KL, entropy bonus, clip metrics) while they stay in the single forward pass.
        on_policy_inputs["tool_mask"] = inputs.get("tool_mask", torch.ones_like(on_policy_only)) * on_policy_only
        with self._capture_forward() as captured:
            on_policy_loss = super()._compute_loss(model, on_policy_inputs)

        per_token_logps, entropies = captured["logps"], captured["entropies"]
        on_policy_loss = self._released_code_terms(on_policy_loss, inputs, on_policy_inputs["tool_mask"], entropies)
        if not guided:
            return on_policy_loss
        mask = inputs["completion_mask"].to(per_token_logps.dtype)
        per_token_loss = off_policy_per_token_loss(per_token_logps, inputs["advantages"], self.args.shaping_gamma)
        if self.beta != 0.0:  # same k3 estimator as the parent, on the teacher rows
            log_ratio = inputs["ref_per_token_logps"] - per_token_logps
            per_token_loss = per_token_loss + self.beta * (torch.exp(log_ratio) - log_ratio - 1)
        training = self.model.training
        normalizer = micro_batch_normalizer(
            inputs["ampo_off_policy_normalizer"],
            self.accelerator.num_processes,
            self.current_gradient_accumulation_steps if training else 1,
            self.args.steps_per_generation,
            training,
        )
        off_policy_loss = (
            aggregate_off_policy_loss(per_token_loss, mask, is_teacher, self.args.off_policy_aggregation) / normalizer
        )
        if self.args.released_loss_scale:
            off_policy_loss = off_policy_loss * num_rows

        teacher_mask = mask * is_teacher.unsqueeze(1)
        with torch.no_grad():
            stats = torch.stack(
                [
                    on_policy_loss.detach().float(),
                    off_policy_loss.detach().float(),
                    (torch.exp(per_token_logps) * teacher_mask).sum().float(),
                    (entropies * teacher_mask).sum().float(),
                    teacher_mask.sum().float(),
                ]
            )
            totals = self.accelerator.reduce(stats, reduction="sum")  # same single reduce on every process
        mode = "train" if training else "eval"
        # Each micro-batch holds its share of the accumulated loss; rescale so that the logged average over the
        # window is the loss of the optimizer step (as TRL's `loss`), averaged over processes.
        scale = (self.current_gradient_accumulation_steps if training else 1) / self.accelerator.num_processes
        self._metrics[mode]["ampo/on_policy_loss"].append(totals[0].item() * scale)
        self._metrics[mode]["ampo/off_policy_loss"].append(totals[1].item() * scale)
        if totals[4] > 0:
            self._metrics[mode]["ampo/off_policy/prob_mean"].append((totals[2] / totals[4]).item())
            self._metrics[mode]["ampo/off_policy/entropy"].append((totals[3] / totals[4]).item())
        return on_policy_loss + off_policy_loss

    def _released_code_terms(self, loss, inputs, on_policy_mask, entropies):
        """The parent's loss with the released code's scale and entropy bonus, when those switches are on.

        The parent's loss is ``policy - c * H_on / accumulation`` with ``H_on`` the mean entropy of the micro-batch's
        on-policy tokens (teacher rows are masked out of it). `released_loss_scale` multiplies the policy part by the
        micro-batch's rows (the released code's sum over rows, where TRL's ``dr_grpo`` averages); with
        `entropy_on_teacher_tokens` the bonus becomes the mean over all its tokens, teacher ones included.
        """
        if not (self.args.released_loss_scale or self.args.entropy_on_teacher_tokens):
            return loss
        coefficient = self.entropy_coef if self._entropy_bonus_enabled else 0.0
        accumulation = self.current_gradient_accumulation_steps if self.model.training else 1
        completion_mask = inputs["completion_mask"].to(entropies.dtype)
        every = completion_mask * inputs["tool_mask"] if "tool_mask" in inputs else completion_mask
        on_policy = completion_mask * on_policy_mask
        parent_bonus = coefficient * (entropies * on_policy).sum() / on_policy.sum().clamp(min=1.0) / accumulation
        if self.args.released_loss_scale:
            loss = (loss + parent_bonus) * completion_mask.size(0) - parent_bonus
        if self.args.entropy_on_teacher_tokens:
            bonus = coefficient * (entropies * every).sum() / every.sum().clamp(min=1.0) / accumulation
            loss = loss + parent_bonus - bonus
        return loss

    @contextmanager
    def _capture_forward(self):
        """Record the (log-probs, entropies) of the parent's forward pass so the teacher loss can reuse it."""
        captured = {}
        original = self._get_per_token_logps_and_entropies

        def capturing(*args, **kwargs):
            logps, entropies, aux_loss = original(*args, **kwargs)
            captured["logps"], captured["entropies"] = logps, entropies
            return logps, entropies, aux_loss

        self._get_per_token_logps_and_entropies = capturing
        try:
            yield captured
        finally:
            del self._get_per_token_logps_and_entropies  # back to the class method
        if "logps" not in captured or captured["entropies"] is None:
            raise RuntimeError(
                "GRPOTrainer._compute_loss no longer computes log-probs and entropies through "
                "_get_per_token_logps_and_entropies; this TRL version is not supported by ampo_trl."
            )

    # ------------------------------------------------------------------------------------------------ logging helpers
    def _as_completion(self, prompt, text):
        return [{"role": "assistant", "content": text}] if is_conversational({"prompt": prompt}) else text

    def _log_sources(self, sources: list[str]):
        self._logs["extra"]["source"].extend(sources)

    def _patch_completion_logs(self, replacements, group_rows, new_rewards, advantages):
        """Show teacher rows in the completions table with their text, re-scored rewards and new advantages."""
        num_rows = new_rewards.size(0)
        columns = [self._logs["completion"], self._logs["advantages"], *self._logs["rewards"].values()]
        if any(len(column) < num_rows for column in columns):
            return
        completions = self._logs["completion"]
        for replacement in replacements:
            text = self._as_completion(group_rows[replacement.group]["prompt"], replacement.candidate.text)
            completions[len(completions) - num_rows + replacement.row] = text
        for i, name in enumerate(self.reward_func_names):
            column = self._logs["rewards"][name]
            for replacement in replacements:
                column[len(column) - num_rows + replacement.row] = new_rewards[replacement.row, i].item()
        logged_advantages = self._logs["advantages"]
        for row, value in enumerate(advantages.tolist()):
            logged_advantages[len(logged_advantages) - num_rows + row] = value

    def _log_teacher_shares(self, replacements):
        chosen = Counter(r.candidate.teacher for r in replacements)
        for teacher in chosen:
            self._teachers_seen.setdefault(teacher, None)
        for teacher in self._teachers_seen:
            # NaN (ignored when averaging) for batches without replacement: a share of nothing is undefined.
            share = chosen[teacher] / len(replacements) if replacements else math.nan
            self._metrics["train"][f"ampo/teacher_share/{teacher}"].append(share)

    def _log_score_stats(self, scores, selected_scores):
        metrics = self._metrics["train"]
        for name, values in (("comprehension", scores), ("comprehension_selected", selected_scores)):
            if values:
                metrics[f"ampo/{name}/mean"].append(sum(values) / len(values))
                metrics[f"ampo/{name}/min"].append(min(values))
                metrics[f"ampo/{name}/max"].append(max(values))
            else:
                metrics[f"ampo/{name}/mean"].append(math.nan)

    def _warn_about_skips(self, counts):
        max_length = self.args.effective_max_teacher_length
        messages = {
            "skipped_too_long": f"teacher solutions longer than max_teacher_length={max_length} tokens are skipped "
            "(never truncated); raise max_teacher_length or max_completion_length to use them",
            "empty_pool_groups": "triggered groups had no usable teacher solution and stayed plain GRPO",
            "skipped_empty_text": "teacher solutions with empty text are skipped",
            "skipped_scoring_too_long": "comprehension candidates longer than the vLLM engine accepts "
            f"(max_model_len - 1 = {(self._vllm_scoring_limit or 0) - 1} tokens) were not scored (score 0); raise the "
            "engine's max_model_len (server: --max-model-len) or set comprehension_max_length to what it accepts",
            "skipped_unverified": "teacher solutions that the correctness reward rejects are skipped (unverified); "
            "check the pool with `ampo-pool validate --check-answers`, or set require_verified_teachers=False",
        }
        for key, message in messages.items():
            if counts[key] and key not in self._warned:
                self._warned.add(key)
                logger.warning("AMPO: %d %s (counted in the metric ampo/%s; warned once).", counts[key], message, key)


def _to_ampo_config(args: GRPOConfig) -> AMPOConfig:
    """An AMPOConfig with AMPO's defaults and every GRPO setting of `args` (so GRPO notebooks run unchanged)."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(GRPOConfig) if f.init}
    values["steps_per_generation"] = None  # derived again from generation_batch_size by __post_init__
    return AMPOConfig(**values)


_VLM_MESSAGE = (
    "AMPO guidance supports text-only models. Set guidance_trigger='never' to train a vision-language model with "
    "plain GRPO."
)


def _default_processing_class(model, args: AMPOConfig):
    """The tokenizer `GRPOTrainer` would load for `model` (same call and options), loaded early so that the training
    data can be checked before the model is."""
    from transformers import AutoProcessor

    if isinstance(model, str):
        model_id, revision = model, (args.model_init_kwargs or {}).get("revision")
    else:
        model_id, revision = get_config_model_id(model.config), None
    return AutoProcessor.from_pretrained(
        model_id,
        revision=revision,
        truncation_side="left",
        padding_side="left",
        trust_remote_code=args.trust_remote_code,
    )


def _uses_math_verify(reward_funcs) -> bool:
    """Whether a reward function reads the gold answer with Math-Verify (then golds it cannot parse are reported)."""
    functions = reward_funcs if isinstance(reward_funcs, (list, tuple)) else [reward_funcs]
    names = {getattr(function, "__name__", str(function)) for function in functions}
    return bool(
        names & {"accuracy_reward", "ampo_reward", "ampo_released_reward", "accuracy", "ampo", "ampo_released"}
    )


def _check_training_data(dataset, args: AMPOConfig, processing_class, check_golds: bool = False) -> None:
    """The start-up check of the training data, run once, before the model loads: missing columns, unreadable pools
    and rows without a gold answer stop here with row, field and entry; teacher solutions are tokenized with the
    student's tokenizer and those longer than `max_teacher_length` are counted with an example (the trainer skips
    them); with ``check_golds``, golds Math-Verify cannot parse are reported; other problems are counted and logged
    once."""
    if isinstance(processing_class, ProcessorMixin):
        raise ValueError(_VLM_MESSAGE)
    columns = getattr(dataset, "column_names", None)
    pool_column = args.guidance_pool_column
    if columns is None:  # iterable dataset without known features: rows are checked as they come
        return
    answer_column = gold_column(columns, args.answer_column)
    if answer_column is None:
        raise ValueError(
            f"The training dataset has a teacher pool ('{pool_column}') but no gold-answer column: neither "
            f"'{args.answer_column}' (answer_column) nor any of {list(GOLD_ANSWER_COLUMNS)}; its columns are {columns}. "
            "Comprehension scoring needs the gold answer: add the column or point answer_column at it."
        )
    if isinstance(dataset, IterableDataset) or not isinstance(dataset, Sized):
        return  # streaming: reading it here would download it (or never end); rows are checked as they come
    report = validate_pool_dataset(
        dataset,
        pool_column=pool_column,
        answer_column=answer_column,
        tokenizer=processing_class,
        max_teacher_length=args.effective_max_teacher_length,
        check_golds=check_golds,
    )
    report.raise_if_fatal()
    missing_gold = report.problems("empty_answer")
    if missing_gold:
        raise DataFormatError(
            f"{report.warning_counts['empty_answer']} training row(s) have a teacher pool but no gold answer, e.g. "
            f"{missing_gold[0].message} Neither the comprehension score nor a verifying reward can use such a row: fill "
            "in the answer or drop the row."
        )
    if report.stats.solutions == 0:
        raise ValueError(
            f"No training row has a teacher solution with text in '{pool_column}', so AMPO could never guide. "
            "Check the pool column, or set guidance_trigger='never' for plain GRPO."
        )
    if report.num_warnings and args.process_index == 0:
        logger.warning(
            "%s\nRows with an empty guidance pool cannot be guided and over-long solutions are skipped; both are "
            "also counted during training (ampo/empty_pool_groups, ampo/skipped_too_long).",
            report.summary(),
        )


def _has_pool_column(dataset, args: AMPOConfig) -> bool:
    """False (with one warning) when the training dataset has no pool column: AMPO without teachers is GRPO. A dataset
    whose columns are unknown up front (streaming) counts as having one; rows without a pool are then empty pools."""
    columns = getattr(dataset, "column_names", None)
    if columns is None or args.guidance_pool_column in columns:
        return True
    logger.warning(
        "AMPO guidance is inactive: the training dataset has no column '%s' (guidance_pool_column; its columns are "
        "%s), so there are no teacher solutions and the trainer is plain GRPOTrainer. Add a pool column (docs/data.md) "
        "or point guidance_pool_column at yours to use AMPO.",
        args.guidance_pool_column,
        columns,
    )
    return False


def _teacher_key(row: dict, candidate: _Candidate, answer_column: str) -> str:
    """What a teacher solution's rewards depend on: the prompt, the gold answer and the text."""
    payload = repr((row.get("prompt"), gold_answer_of_row(row, answer_column), candidate.teacher, candidate.text))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


@contextmanager
def _awake_engine(generation):
    """The colocated vLLM engine, awake with the current weights for the duration of the block. With
    `vllm_enable_sleep_mode`, TRL puts the engine to sleep after generating (weights discarded): wake it and re-push
    the weights as TRL does before generating, then put it back to sleep. Every process enters this block."""
    sleeping = getattr(generation, "enable_sleep_mode", False) and getattr(generation, "_llm_weights_sleeping", False)
    if sleeping:
        generation.sync_weights()  # wakes the weights and loads the current ones (a collective under ZeRO-3)
        generation.llm.wake_up(tags=["kv_cache"])
    try:
        yield
    finally:
        if sleeping:
            generation.llm.sleep(level=2)
            generation._llm_weights_sleeping = True
