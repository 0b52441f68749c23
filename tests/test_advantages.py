"""Advantages over the augmented group (pure function; its equality with TRL's is checked in test_trainer.py)."""

import pytest
import torch

from ampo_trl.advantages import compute_advantages, weighted_total_rewards


def test_worked_example_of_the_spec_mean_centred():
    # six failed rows at 0.1 and two teacher rows at 1.0, released-code rule (no std division)
    rewards = torch.tensor([[0.1]] * 6 + [[1.0]] * 2)
    advantages, _ = compute_advantages(rewards, torch.ones(1), 8, scale_rewards="none")
    assert advantages[:6].tolist() == pytest.approx([-0.225] * 6)
    assert advantages[6:].tolist() == pytest.approx([0.675] * 2)


def test_group_normalised_paper_rule():
    rewards = torch.tensor([[0.1]] * 6 + [[1.0]] * 2)
    advantages, is_std_zero = compute_advantages(rewards, torch.ones(1), 8, scale_rewards="group")
    std = torch.tensor([0.1] * 6 + [1.0] * 2).std()
    assert advantages[0].item() == pytest.approx(-0.225 / (std.item() + 1e-4))
    assert advantages[7].item() == pytest.approx(0.675 / (std.item() + 1e-4))
    assert not is_std_zero.any()


def test_groups_are_normalised_independently_and_batch_scaling_uses_global_std():
    rewards = torch.tensor([[0.0], [1.0], [5.0], [5.0]])
    advantages, is_std_zero = compute_advantages(rewards, torch.ones(1), 2, scale_rewards="none")
    assert advantages.tolist() == pytest.approx([-0.5, 0.5, 0.0, 0.0])
    assert is_std_zero.tolist() == [False, False, True, True]
    batch, _ = compute_advantages(rewards, torch.ones(1), 2, scale_rewards="batch")
    assert batch[1].item() == pytest.approx(0.5 / (rewards.std().item() + 1e-4))


def test_weights_and_nan_rows():
    rewards = torch.tensor([[1.0, 1.0], [0.0, 1.0], [float("nan"), float("nan")], [0.0, float("nan")]])
    totals = weighted_total_rewards(rewards, torch.tensor([0.9, 0.1]))
    assert totals[0].item() == pytest.approx(1.0) and totals[1].item() == pytest.approx(0.1)
    assert torch.isnan(totals[2]) and totals[3].item() == 0.0
    advantages, _ = compute_advantages(rewards, torch.tensor([0.9, 0.1]), 4, scale_rewards="none")
    assert advantages[2].item() == 0.0  # unscorable: excluded from the mean, no advantage
    mean = (1.0 + 0.1 + 0.0) / 3
    assert advantages[0].item() == pytest.approx(1.0 - mean)


def test_teacher_reward_floor_raises_only_marked_rows():
    rewards = torch.tensor([[0.1], [0.1], [0.6], [0.6]])
    mask = torch.tensor([False, False, True, False])
    advantages, _ = compute_advantages(
        rewards, torch.ones(1), 4, scale_rewards="none", reward_floor=1.0, floor_mask=mask
    )
    mean = (0.1 + 0.1 + 1.0 + 0.6) / 4
    assert advantages.tolist() == pytest.approx([0.1 - mean, 0.1 - mean, 1.0 - mean, 0.6 - mean])


def test_normalize_then_sum_matches_gdpo_definition():
    rewards = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0]])
    advantages, _ = compute_advantages(
        rewards, torch.tensor([1.0, 1.0]), 2, multi_objective_aggregation="normalize_then_sum"
    )
    grouped = rewards.view(2, 2, 2)
    normalised = ((grouped - grouped.mean(1, keepdim=True)) / (grouped.std(1, keepdim=True) + 1e-4)).view(4, 2)
    summed = normalised.sum(1)
    expected = (summed - summed.mean()) / (summed.std() + 1e-4)
    assert advantages.tolist() == pytest.approx(expected.tolist(), abs=1e-5)
    with pytest.raises(ValueError, match="sum_then_normalize"):
        compute_advantages(rewards, torch.ones(2), 2, multi_objective_aggregation="normalize_then_sum", reward_floor=1)


def test_invalid_options_are_rejected():
    with pytest.raises(ValueError, match="scale_rewards"):
        compute_advantages(torch.zeros(2, 1), torch.ones(1), 2, scale_rewards="std")
    with pytest.raises(ValueError, match="multi_objective_aggregation"):
        compute_advantages(torch.zeros(2, 1), torch.ones(1), 2, multi_objective_aggregation="max")
