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


# ------------------------------------------------------------------------ boundaries found by mutation testing


def test_default_scaling_is_trls_group_std():
    rewards = torch.tensor([[0.0], [1.0], [1.0], [1.0]])
    default, _ = compute_advantages(rewards, torch.ones(1), 4)
    group, _ = compute_advantages(rewards, torch.ones(1), 4, scale_rewards="group")
    assert default.tolist() == group.tolist()
    assert default[0].item() == pytest.approx(-0.75 / (0.5 + 1e-4))


@pytest.mark.parametrize(
    "settings",
    [
        {"scale_rewards": "group"},
        {"scale_rewards": "none"},
        {"scale_rewards": "batch"},
        {"multi_objective_aggregation": "normalize_then_sum"},
    ],
)
def test_single_completion_groups_have_zero_advantage_and_zero_std(settings):
    """num_generations = 1 (and a batch of one row): no spread, so A = 0 and the std counts as zero, as in TRL."""
    for rewards in (torch.tensor([[0.3], [0.9]]), torch.tensor([[0.3]])):
        advantages, is_std_zero = compute_advantages(rewards, torch.ones(1), 1, **settings)
        assert advantages.tolist() == [0.0] * rewards.size(0)
        if rewards.size(0) == 1 or settings.get("scale_rewards") != "batch":
            assert is_std_zero.all()


def test_batch_std_of_two_rows():
    rewards = torch.tensor([[0.0], [1.0]])
    advantages, is_std_zero = compute_advantages(rewards, torch.ones(1), 2, scale_rewards="batch")
    std = rewards.std().item()
    assert advantages.tolist() == pytest.approx([-0.5 / (std + 1e-4), 0.5 / (std + 1e-4)])
    assert not is_std_zero.any()
    gdpo, _ = compute_advantages(
        torch.tensor([[0.0, 1.0], [1.0, 1.0]]), torch.ones(2), 2, multi_objective_aggregation="normalize_then_sum"
    )
    assert gdpo[0].item() < 0 < gdpo[1].item() and gdpo[1].item() == pytest.approx(0.7071, abs=1e-3)


def test_advantages_keep_the_rewards_dtype_whatever_the_weights_dtype():
    rewards = torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=torch.float32)
    weights = torch.tensor([0.9, 0.1], dtype=torch.float64)
    assert weighted_total_rewards(rewards, weights).dtype == torch.float32
    for aggregation in ("sum_then_normalize", "normalize_then_sum"):
        advantages, _ = compute_advantages(rewards, weights, 2, multi_objective_aggregation=aggregation)
        assert advantages.dtype == torch.float32


def test_floor_needs_both_a_value_and_a_mask():
    rewards = torch.tensor([[0.1], [0.5]])
    plain, _ = compute_advantages(rewards, torch.ones(1), 2, scale_rewards="none")
    for floor, mask in ((1.0, None), (None, torch.tensor([True, True]))):
        advantages, _ = compute_advantages(
            rewards, torch.ones(1), 2, scale_rewards="none", reward_floor=floor, floor_mask=mask
        )
        assert advantages.tolist() == plain.tolist()


def test_unscorable_rows_are_left_out_of_gdpo_and_never_raised_by_the_floor():
    nan = float("nan")
    rewards = torch.tensor([[1.0, 0.0], [0.0, 1.0], [nan, nan], [1.0, 1.0]])
    advantages, _ = compute_advantages(rewards, torch.ones(2), 4, multi_objective_aggregation="normalize_then_sum")
    assert advantages[2].item() == 0.0
    scorable, _ = compute_advantages(
        rewards[[0, 1, 3]], torch.ones(2), 3, multi_objective_aggregation="normalize_then_sum"
    )
    assert advantages[[0, 1, 3]].tolist() == pytest.approx(scorable.tolist(), abs=1e-4)
    floored, _ = compute_advantages(
        rewards[:, :1],
        torch.ones(1),
        4,
        scale_rewards="none",
        reward_floor=1.0,
        floor_mask=torch.tensor([False, True, True, False]),
    )
    # row 1 (0.0) is raised to 1.0; row 2 (unscorable) stays out: mean of (1, 1, 1) = 1
    assert floored.tolist() == pytest.approx([0.0, 0.0, 0.0, 0.0])


def test_invalid_aggregation_message_names_both_choices():
    with pytest.raises(ValueError, match="'sum_then_normalize' or 'normalize_then_sum'"):
        compute_advantages(torch.zeros(2, 1), torch.ones(1), 2, multi_objective_aggregation="max")
