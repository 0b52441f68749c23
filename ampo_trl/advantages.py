r"""Group advantages over the *augmented* group (on-policy rows and teacher rows together).

This reproduces the normalisation of TRL 1.16's `GRPOTrainer._generate_and_score_completions` as a pure function,
so that AMPO can recompute advantages after teacher rows replaced failed ones; a test checks that it matches the
parent's advantages exactly on batches without replacement, which catches any drift in a new TRL release.

With R_ij the reward of function j for row i, weights w_j, groups of G rows:

* ``sum_then_normalize`` (TRL default):  r_i = sum_j w_j R_ij, then
  A_i = (r_i - mean_group(r)) / (std + 1e-4) with std the group std (``scale_rewards="group"``), the batch std
  (``"batch"``), or no division (``"none"``, the released AMPO scripts' choice).
* ``normalize_then_sum`` (GDPO): each R_.j is normalised within the group, summed with the weights, and the sum is
  normalised over the batch.

Teacher rows take part in the mean and std, as in the paper (Eq. 6). Worked example (``scale_rewards="none"``,
k = 2): six failed rows at 0.1 and two teacher rows at 1.0 give a mean of 0.325, so A = -0.225 for the failed rows
and +0.675 for the teacher rows.

Rows for which every reward function returned None (NaN) are left out of means and stds and get advantage 0.
`teacher_reward_floor` (released code: 1.0) raises the total reward of the marked rows before normalising.
"""

from __future__ import annotations

import torch
from trl.trainer.utils import nanstd


def weighted_total_rewards(rewards_per_func: torch.Tensor, reward_weights: torch.Tensor) -> torch.Tensor:
    """(N,) sum_j w_j R_ij, NaN where every function returned NaN (unscorable row)."""
    weights = reward_weights.to(rewards_per_func.device, rewards_per_func.dtype).unsqueeze(0)
    totals = (rewards_per_func * weights).nansum(dim=1)
    totals[torch.isnan(rewards_per_func).all(dim=1)] = torch.nan
    return totals


def compute_advantages(
    rewards_per_func: torch.Tensor,
    reward_weights: torch.Tensor,
    num_generations: int,
    scale_rewards: str = "group",
    multi_objective_aggregation: str = "sum_then_normalize",
    reward_floor: float | None = None,
    floor_mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Advantages for a gathered batch, exactly as TRL's GRPOTrainer computes them.

    Args:
        rewards_per_func: (N, F) rewards, N = num_groups * num_generations, groups contiguous.
        reward_weights: (F,) weights.
        reward_floor, floor_mask: if given, the total reward of rows where `floor_mask` is True is raised to at
            least `reward_floor` (only with "sum_then_normalize").

    Returns:
        (advantages, is_std_zero): both (N,); NaN-free advantages.
    """
    unscorable = torch.isnan(rewards_per_func).all(dim=1)
    if multi_objective_aggregation == "sum_then_normalize":
        rewards = weighted_total_rewards(rewards_per_func, reward_weights)
        if reward_floor is not None and floor_mask is not None:
            raised = floor_mask & ~unscorable & (rewards < reward_floor)
            rewards = torch.where(raised, torch.full_like(rewards, reward_floor), rewards)
        grouped = rewards.view(-1, num_generations)
        mean_grouped = torch.nanmean(grouped, dim=1).repeat_interleave(num_generations, dim=0)
        if scale_rewards in ("group", "none"):
            if num_generations > 1:
                std = nanstd(grouped, dim=1).repeat_interleave(num_generations, dim=0)
            else:
                std = torch.zeros_like(rewards)
        elif scale_rewards == "batch":
            std = nanstd(rewards).expand_as(rewards) if rewards.numel() > 1 else torch.zeros_like(rewards)
        else:
            raise ValueError(f"Invalid scale_rewards {scale_rewards!r}: use 'batch', 'group' or 'none'.")
        advantages = rewards - mean_grouped
        if scale_rewards != "none":
            advantages = advantages / (std + 1e-4)
    elif multi_objective_aggregation == "normalize_then_sum":
        if reward_floor is not None:
            raise ValueError("reward_floor needs multi_objective_aggregation='sum_then_normalize'.")
        num_funcs = rewards_per_func.size(1)
        grouped = rewards_per_func.view(-1, num_generations, num_funcs)
        mean_k = torch.nanmean(grouped, dim=1, keepdim=True)
        std_k = nanstd(grouped, dim=1, keepdim=True) if num_generations > 1 else torch.zeros_like(mean_k)
        normalised = ((grouped - mean_k) / (std_k + 1e-4)).view(-1, num_funcs)
        weights = reward_weights.to(rewards_per_func.device, rewards_per_func.dtype).unsqueeze(0)
        rewards = (normalised * weights).nansum(dim=1)
        rewards[unscorable] = torch.nan
        std = nanstd(rewards).expand_as(rewards) if rewards.numel() > 1 else torch.zeros_like(rewards)
        advantages = (rewards - torch.nanmean(rewards)) / (std + 1e-4)
    else:
        raise ValueError(
            f"Invalid multi_objective_aggregation {multi_objective_aggregation!r}: use 'sum_then_normalize' or "
            "'normalize_then_sum'."
        )
    is_std_zero = torch.isclose(std, torch.zeros_like(std))
    return torch.nan_to_num(advantages, nan=0.0), is_std_zero
