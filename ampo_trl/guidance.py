r"""Pure decision logic of AMPO: which groups get guidance, which rows are replaced, which teacher solutions win.

Everything here is a deterministic function of its arguments (randomness comes from generators seeded by
`group_seed`), so every process computes the same decisions from the same gathered data, which is what keeps
multi-process training consistent when a group of G completions spans several processes.

Notation: a *group* is the G = `num_generations` completions of one prompt; `correct[i]` says whether completion i is
correct (correctness reward >= threshold; a NaN reward, i.e. unscorable, counts as not correct).

Triggers (number of rows to replace in a group with c correct and f = G - c failed rows, before capping by the
usable pool size):

* ``all_fail`` (paper):      c = 0                     -> k
* ``always`` ("w/o adaptive"): f > 0                    -> min(k, f)
* ``hybrid`` (released code): c = 0, or f > 0 with probability p -> min(k, f)
* ``adaptive_k`` (this package's extension): c < G / 2      -> max(1, floor((f - c) / 2)), which makes the group's
  correct/incorrect mix as close to 1:1 as possible
* ``never``:                 never                      -> 0
* ``every_group`` (LUFFY-style baseline): every group  -> min(k, G - 1), correct rows included: a fixed share of
  every group is off-policy, as in LUFFY's mixed-policy GRPO

Replaced rows are drawn uniformly at random among the failed rows (`replaceable_rows`; among all rows for
``every_group``). Teacher solutions are ranked by

* ``comprehension`` (paper): score descending, then token length ascending (shorter wins ties), then pool order;
  with ``tie_break="quality_score"`` (released code) ties go to the higher ``quality_score`` instead;
* ``shortest`` (r_length ablation): token length ascending, then pool order;
* ``random`` (r_random ablation): a seeded permutation;

and the top k' = min(requested, usable pool size) are used. `assign_solutions` says which replaced row gets which of
them: best first in ascending row order (``"ranked"``), or the released code's rule (``"released"``): rows in
ascending order j each take the (j mod remaining)-th of the solutions still unassigned.

``adaptive_k`` is this package's own extension; the released code has ``adaptive`` (= ``all_fail``), ``hybrid`` and
``always`` only.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

import torch


def group_seed(*parts) -> int:
    """A 63-bit seed from any printable parts (seed, step, group index, prompt text ...), equal on every process.

    Python's `hash()` is salted per process, so a cryptographic digest of the parts' `repr` is used instead.
    """
    digest = hashlib.sha256(repr(parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def make_generator(seed: int) -> torch.Generator:
    generator = torch.Generator(device="cpu")
    generator.manual_seed(seed)
    return generator


def correctness_mask(correctness_rewards: torch.Tensor, threshold: float) -> torch.Tensor:
    """(N,) bool: reward >= threshold. NaN (unscorable) is never correct."""
    rewards = correctness_rewards.float()
    return torch.nan_to_num(rewards, nan=-math.inf) >= threshold


def requested_replacements(
    correct: torch.Tensor,
    num_generations: int,
    trigger: str,
    num_replacements: int,
    hybrid_draws: torch.Tensor | None = None,
    hybrid_probability: float = 0.0,
) -> torch.Tensor:
    """Number of rows each group asks to replace (0 = not guided), before capping by the usable pool size.

    Args:
        correct: (N,) bool, N = num_groups * num_generations, groups contiguous.
        hybrid_draws: (num_groups,) uniform [0, 1) draws, required for trigger "hybrid".

    Returns:
        (num_groups,) long tensor.
    """
    if correct.numel() % num_generations != 0:
        raise ValueError(f"{correct.numel()} rows do not form whole groups of {num_generations}.")
    grouped = correct.view(-1, num_generations)
    num_correct = grouped.sum(dim=1)
    num_failed = num_generations - num_correct
    capped_k = torch.clamp(num_failed, max=num_replacements)
    if trigger == "never":
        return torch.zeros_like(num_correct)
    if trigger == "all_fail":
        return torch.where(num_correct == 0, capped_k, torch.zeros_like(capped_k))
    if trigger == "always":
        return capped_k
    if trigger == "hybrid":
        if hybrid_draws is None:
            raise ValueError("trigger 'hybrid' needs one uniform draw per group (hybrid_draws).")
        guided = (num_correct == 0) | ((num_failed > 0) & (hybrid_draws < hybrid_probability))
        return torch.where(guided, capped_k, torch.zeros_like(capped_k))
    if trigger == "every_group":
        return torch.full_like(num_correct, min(num_replacements, num_generations - 1))
    if trigger == "adaptive_k":
        balance = torch.clamp((num_failed - num_correct) // 2, min=1)
        return torch.where(2 * num_correct < num_generations, balance, torch.zeros_like(balance))
    raise ValueError(f"Unknown guidance trigger {trigger!r}.")


def replaceable_rows(correct: torch.Tensor, trigger: str) -> torch.Tensor:
    """(G,) bool: the rows of one group that may be replaced: the failed ones, or every row for ``every_group``."""
    if trigger == "every_group":
        return torch.ones_like(correct, dtype=torch.bool)
    return ~correct


def choose_rows_to_replace(failed: torch.Tensor, count: int, generator: torch.Generator) -> list[int]:
    """Offsets (within the group, ascending) of `count` rows drawn uniformly without replacement among failed rows."""
    failed_offsets = torch.nonzero(failed, as_tuple=False).flatten()
    if count > failed_offsets.numel():
        raise ValueError(f"Cannot replace {count} rows: only {failed_offsets.numel()} failed.")
    order = torch.randperm(failed_offsets.numel(), generator=generator)
    return sorted(failed_offsets[order[:count]].tolist())


def rows_held_by_process(global_rows: Sequence[int], process_index: int, rows_per_process: int) -> dict[int, int]:
    """``{local row: position in global_rows}`` for the rows process ``process_index`` holds.

    TRL gives process ``p`` the global rows ``[p·n, (p+1)·n)`` of a generation batch (``n`` rows per process), so a
    group may span two processes; a row equal to ``(p+1)·n`` is the first row of the next process.
    """
    first, stop = process_index * rows_per_process, (process_index + 1) * rows_per_process
    return {row - first: position for position, row in enumerate(global_rows) if first <= row < stop}


def rank_candidates(
    selection: str,
    lengths: Sequence[int],
    scores: Sequence[float] | None = None,
    generator: torch.Generator | None = None,
    tie_break: str = "shortest",
    qualities: Sequence[float | None] | None = None,
) -> list[int]:
    """Indices of the candidates, best first.

    Args:
        selection: "comprehension", "shortest" or "random".
        lengths: token length of each candidate (ties in "comprehension" go to the shorter one).
        scores: comprehension score of each candidate (required for "comprehension").
        generator: required for "random".
        tie_break: "shortest", or "quality_score" (ties in "comprehension" go to the higher quality score; a
            missing one ranks last).
        qualities: the candidates' quality scores (for tie_break="quality_score").
    """
    indices = list(range(len(lengths)))
    if selection == "comprehension":
        if scores is None or len(scores) != len(lengths):
            raise ValueError("comprehension ranking needs one score per candidate.")
        if tie_break == "quality_score":
            quality = [-math.inf if q is None else float(q) for q in (qualities or [None] * len(lengths))]
            return sorted(indices, key=lambda i: (-float(scores[i]), -quality[i], i))
        if tie_break != "shortest":
            raise ValueError(f"Unknown tie break {tie_break!r}.")
        return sorted(indices, key=lambda i: (-float(scores[i]), lengths[i], i))
    if selection == "shortest":
        return sorted(indices, key=lambda i: (lengths[i], i))
    if selection == "random":
        if generator is None:
            raise ValueError("random ranking needs a seeded generator.")
        return torch.randperm(len(indices), generator=generator).tolist()
    raise ValueError(f"Unknown guidance selection {selection!r}.")


def assign_solutions(offsets: Sequence[int], rule: str) -> list[int]:
    """For replaced rows at ascending group offsets, the rank (0 = best) of the chosen solution each one gets.

    ``"ranked"``: best first. ``"released"`` (the authors' ``mix_dapo_trainer.py``): row j takes the
    ``j mod remaining``-th of the ranks not yet taken, so with k = 2 an odd first row gets the second-best solution.
    """
    if rule == "ranked":
        return list(range(len(offsets)))
    if rule != "released":
        raise ValueError(f"Unknown teacher assignment {rule!r}.")
    remaining, ranks = list(range(len(offsets))), []
    for offset in offsets:
        ranks.append(remaining.pop(offset % len(remaining) if len(remaining) > 1 else 0))
    return ranks


def comprehension_score(
    answer_logps: torch.Tensor,
    mean: str = "geometric",
    format_score: float = 0.0,
    format_weight: float = 0.0,
    round_to_bf16: bool = False,
) -> float:
    r"""Score of one teacher solution from the student's log-probs of the ground-truth answer tokens.

    geometric (paper):   s = clip(exp(mean_t log p_t), 0, 1)
    arithmetic (code):   s = mean_t p_t
    then optionally rounded to bfloat16 and mixed with the teacher text's format score:
    (1 - w) * s + w * fmt. No answer token (empty `answer_logps`) scores 0.
    """
    if answer_logps.numel() == 0:
        score = 0.0
    elif mean == "geometric":
        score = float(torch.exp(answer_logps.double().mean()).clamp(0.0, 1.0))
    elif mean == "arithmetic":
        score = float(torch.exp(answer_logps.double()).mean())
    else:
        raise ValueError(f"Unknown comprehension mean {mean!r}.")
    if round_to_bf16:
        score = float(torch.tensor(score, dtype=torch.bfloat16).float())
    return (1.0 - format_weight) * score + format_weight * format_score
