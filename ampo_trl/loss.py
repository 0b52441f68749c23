r"""AMPO's loss on teacher (off-policy) rows and how it is combined with GRPO's loss on on-policy rows.

Objective (what `AMPOTrainer._compute_loss` minimises for one generation batch, gathered over all processes):

    L = L_on + L_off

* ``L_on`` is TRL's GRPO loss for the configured `loss_type`, computed on on-policy rows only (teacher rows are
  masked out). For the token-normalised loss types (``dapo`` default, ``cispo``, ``vespo``) the normaliser
  `num_items_in_batch` is recounted: on-policy tokens in ``sequence`` mode, all tokens in ``token`` mode.
* ``L_off`` uses LUFFY's policy shaping with the teacher's probability taken as 1 (no ratio to pi_old, no clip):

      l_it = -A_i * f(p_it),   f(x) = x / (x + gamma),   p_it = pi_theta(o_it | q, o_i,<t)   (temperature-scaled)

  so that  grad l_it = -A_i * gamma p / (p + gamma)^2 * grad log p: low-probability teacher tokens still teach,
  high-probability ones cannot dominate. Aggregation over the teacher rows T of the generation batch:

      sequence (paper):  L_off = 1/N_rows   * sum_{i in T} (1/|o_i|) sum_t l_it
      token (LUFFY):     L_off = 1/N_tokens * sum_{i in T} sum_t l_it
      constant (code):   L_off = 1/(N_rows * L_max) * sum_{i in T} sum_t l_it   (L_max = max_completion_length)

  N_rows is the global number of rows of the generation batch (on-policy + teacher), so a teacher sequence weighs
  what one row weighs in a sequence-mean loss, whatever its length. N_tokens is the global number of loss tokens
  (on-policy + teacher), the same normaliser the on-policy term gets in ``token`` mode, which makes ``token`` mode
  with ``loss_type="dapo"`` one token-level mean over every token, as in LUFFY.

Guarantees (each is a test in tests/test_loss.py):

(a) with no teacher row, L is exactly the parent GRPO loss (the parent code path is used unchanged);
(b) in ``sequence`` mode each teacher sequence's total weight 1/N_rows does not depend on its length;
(c) N_rows and N_tokens are global over processes and gradient-accumulation micro-batches (fixed when the batch is
    generated), so how rows fall into micro-batches does not change any row's weight.

Per micro-batch, a global normaliser N becomes N / num_processes * grad_accum / steps_per_generation (exactly what
TRL does for ``dapo``), so that summing the micro-batch losses of all processes gives the formula above.
"""

from __future__ import annotations

import torch


def shaping_function(probabilities: torch.Tensor, gamma: float) -> torch.Tensor:
    """f(p) = p / (p + gamma)."""
    return probabilities / (probabilities + gamma)


def off_policy_per_token_loss(per_token_logps: torch.Tensor, advantages: torch.Tensor, gamma: float) -> torch.Tensor:
    """l_t = -A * f(exp(log p_t)); `advantages` is (B,) or (B, 1), `per_token_logps` (B, T)."""
    if advantages.dim() == 1:
        advantages = advantages.unsqueeze(1)
    return -advantages * shaping_function(torch.exp(per_token_logps), gamma)


def aggregate_off_policy_loss(
    per_token_loss: torch.Tensor, mask: torch.Tensor, is_teacher: torch.Tensor, aggregation: str
) -> torch.Tensor:
    """Un-normalised sum over teacher rows: sum_i mean_t l_it ("sequence") or sum_i sum_t l_it ("token",
    "constant").

    Divide by the global normaliser (N_rows or N_tokens, see `micro_batch_normalizer`) to get this micro-batch's
    share of L_off.
    """
    teacher_mask = mask * is_teacher.unsqueeze(1).to(mask.dtype)
    token_sums = (per_token_loss * teacher_mask).sum(dim=1)
    if aggregation == "sequence":
        lengths = teacher_mask.sum(dim=1).clamp(min=1.0)
        return (token_sums / lengths).sum()
    if aggregation in ("token", "constant"):  # they differ only in the normaliser
        return token_sums.sum()
    raise ValueError(f"Unknown off-policy aggregation {aggregation!r}: use 'sequence' or 'token'.")


def micro_batch_normalizer(
    global_normalizer: torch.Tensor | float,
    num_processes: int,
    gradient_accumulation_steps: int,
    steps_per_generation: int,
    training: bool,
) -> torch.Tensor | float:
    """The per-micro-batch divisor that turns a global normaliser into this micro-batch's share (as TRL's dapo)."""
    normalizer = global_normalizer / num_processes
    if training:  # in eval the batch is neither split across steps nor accumulated
        normalizer = normalizer * gradient_accumulation_steps / steps_per_generation
    return normalizer
