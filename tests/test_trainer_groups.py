"""The trainer on groups with some correct rows (a scripted correctness reward decides, per prompt, which sampled
completions are correct): which groups are guided under every trigger and threshold, that only failed rows are
replaced (any row for every_group), and the advantages of the augmented groups, computed by hand."""

import pytest
import torch
from helpers import (
    always_correct_reward,
    generate,
    make_trainer,
    scripted_correctness_reward,
    scripted_rows,
    teacher_offsets,
)


def run(tmp_path, patterns, num_generations=4, pool_size=3, reward_funcs=(scripted_correctness_reward,), **config):
    rows = scripted_rows(patterns, pool_size=pool_size)
    trainer = make_trainer(
        tmp_path,
        rows=rows,
        reward_funcs=list(reward_funcs),
        num_generations=num_generations,
        per_device_train_batch_size=num_generations * len(patterns),
        **config,
    )
    batch = generate(trainer, rows)
    return trainer, batch, teacher_offsets(batch, num_generations)


def failed_offsets(pattern, threshold=1.0):
    return [offset for offset, reward in enumerate(pattern) if reward < threshold]


def hand_advantages(patterns, offsets):
    """TRL's default group normalisation over the augmented groups: a teacher row has reward 1, a sampled row its
    scripted reward; A = (r - mean) / (std + 1e-4), unbiased std."""
    expected = []
    for pattern, replaced in zip(patterns, offsets):
        rewards = torch.tensor([1.0 if offset in replaced else float(r) for offset, r in enumerate(pattern)])
        expected.append((rewards - rewards.mean()) / (rewards.std() + 1e-4))
    return torch.cat(expected)


def test_always_replaces_only_failed_rows_up_to_k(tmp_path):
    # two failed rows at different places in each of the first six groups (k = 2: exactly those), then groups with
    # one failure (only it), three failures (two of them) and none (no guidance)
    patterns = [
        [1, 0, 1, 0], [0, 1, 1, 0], [1, 1, 0, 0], [0, 0, 1, 1], [0, 1, 0, 1], [1, 0, 0, 1],
        [1, 0, 1, 1], [1, 0, 0, 0], [1, 1, 1, 1],
    ]  # fmt: skip
    trainer, batch, offsets = run(tmp_path, patterns, guidance_trigger="always", num_replacements=2)
    for pattern, replaced in zip(patterns[:7], offsets[:7]):
        assert replaced == failed_offsets(pattern)
    assert len(offsets[7]) == 2 and set(offsets[7]) <= {1, 2, 3}
    assert offsets[8] == []
    torch.testing.assert_close(batch["advantages"], hand_advantages(patterns, offsets))
    metrics = trainer._metrics["train"]
    assert metrics["ampo/replaced_rows"][-1] == 15.0
    assert metrics["ampo/replaced_row_fraction"][-1] == pytest.approx(15 / 36)
    augmented = [1.0 if o in replaced else float(r) for p, replaced in zip(patterns, offsets) for o, r in enumerate(p)]
    assert metrics["ampo/reward_with_guidance"][-1] == pytest.approx(sum(augmented) / 36)
    assert metrics["ampo/teacher_reward_mean"][-1] == 1.0 and metrics["ampo/teacher_incorrect_fraction"][-1] == 0.0
    assert metrics["ampo/all_fail_fraction"][-1] == 0.0
    assert metrics["ampo/all_correct_fraction"][-1] == pytest.approx(1 / 9)
    assert metrics["ampo/triggered_group_fraction"][-1] == pytest.approx(8 / 9)


def test_replaced_rows_are_drawn_among_the_failed_rows(tmp_path):
    """Three failed rows, k = 1: which one is drawn varies with the group (uniform draws), never a correct row."""
    patterns = [[0, 1, 0, 0], [0, 0, 1, 0], [1, 0, 0, 0], [0, 0, 0, 1]] * 3
    _, _, offsets = run(tmp_path, patterns, guidance_trigger="always", num_replacements=1)
    for pattern, replaced in zip(patterns, offsets):
        assert len(replaced) == 1 and replaced[0] in failed_offsets(pattern)
    # the first two patterns have 0 as first and 3 as last failed row: draws are neither always the first failed
    # row nor always the last
    drawn = {offsets[g][0] for g in range(12) if g % 4 in (0, 1)}
    assert drawn != {0} and drawn != {3}


def test_all_fail_guides_only_groups_without_a_correct_row(tmp_path):
    patterns = [[0, 0, 0, 0], [0, 1, 0, 0], [1, 1, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0]]
    trainer, batch, offsets = run(tmp_path, patterns, guidance_trigger="all_fail", num_replacements=2)
    assert [len(o) for o in offsets] == [2, 0, 0, 0, 2]  # one correct row is enough to stay plain GRPO
    torch.testing.assert_close(batch["advantages"], hand_advantages(patterns, offsets))
    metrics = trainer._metrics["train"]
    assert metrics["ampo/all_fail_fraction"][-1] == pytest.approx(2 / 5)
    assert metrics["ampo/guided_group_fraction"][-1] == pytest.approx(2 / 5)


@pytest.mark.parametrize(
    "threshold, guided",
    [(1.0, True), (0.6, True), (0.5, False), (0.25, False)],  # reward == threshold counts as correct
)
def test_correctness_threshold_decides_which_rows_are_correct(tmp_path, threshold, guided):
    patterns = [[0.5, 0.0, 0.0, 0.0]]
    _, batch, offsets = run(tmp_path, patterns, guidance_trigger="all_fail", correctness_threshold=threshold)
    assert len(offsets[0]) == (2 if guided else 0)
    if guided:  # the 0.5 row failed too, so it may be replaced; the advantages use the raw rewards
        torch.testing.assert_close(batch["advantages"], hand_advantages(patterns, offsets))


def test_threshold_also_decides_which_rows_may_be_replaced(tmp_path):
    patterns = [[0.5, 0.5, 0.0, 0.0], [0.0, 0.5, 0.5, 0.0], [0.5, 0.0, 0.0, 0.5]]
    _, _, offsets = run(tmp_path, patterns, guidance_trigger="always", num_replacements=2, correctness_threshold=0.5)
    assert offsets == [failed_offsets(pattern, 0.5) for pattern in patterns]


def test_hybrid_guides_all_fail_groups_and_a_random_share_of_the_others(tmp_path):
    patterns = [[0, 0, 0, 0]] + [[1, 0, 0, 0]] * 8 + [[1, 1, 1, 1]]
    _, _, offsets = run(
        tmp_path, patterns, guidance_trigger="hybrid", hybrid_trigger_probability=0.5, num_replacements=2
    )
    assert len(offsets[0]) == 2  # no correct row: always guided
    assert offsets[9] == []  # nothing failed: never guided
    guided_mixed = [g for g in range(1, 9) if offsets[g]]
    assert 0 < len(guided_mixed) < 8  # seeded uniform draws against p = 0.5, not all and not none
    for g in guided_mixed:
        assert len(offsets[g]) == 2 and set(offsets[g]) <= {1, 2, 3}


def test_hybrid_with_probability_one_guides_every_group_with_a_failure(tmp_path):
    patterns = [[0, 0, 0, 0]] + [[1, 0, 0, 0]] * 4 + [[1, 1, 1, 1]]
    _, _, offsets = run(tmp_path, patterns, guidance_trigger="hybrid", hybrid_trigger_probability=1.0)
    assert [len(o) for o in offsets] == [2, 2, 2, 2, 2, 0]


def test_adaptive_k_balances_each_group_whatever_k(tmp_path):
    # G = 8, c correct rows: max(1, (8 - 2c) // 2) rows while c < 4, none from c = 4 on; k = 1 is not a cap
    patterns = [[0] * 8, [1] + [0] * 7, [1, 1] + [0] * 6, [1, 1, 1] + [0] * 5, [1] * 4 + [0] * 4, [1] * 5 + [0] * 3]
    _, batch, offsets = run(
        tmp_path, patterns, num_generations=8, pool_size=5, guidance_trigger="adaptive_k", num_replacements=1
    )
    assert [len(o) for o in offsets] == [4, 3, 2, 1, 0, 0]
    for pattern, replaced in zip(patterns, offsets):
        assert set(replaced) <= set(failed_offsets(pattern))
    torch.testing.assert_close(batch["advantages"], hand_advantages(patterns, offsets))


def test_adaptive_k_is_capped_by_the_usable_pool(tmp_path):
    _, _, offsets = run(
        tmp_path, [[0] * 8], num_generations=8, pool_size=3, guidance_trigger="adaptive_k", num_replacements=1
    )
    assert len(offsets[0]) == 3  # asks for 4, the pool has 3 solutions


def test_every_group_replaces_k_rows_of_every_group_correct_or_not(tmp_path):
    patterns = [[1, 1, 1, 1], [1, 0, 1, 0], [0, 0, 0, 0]] * 3
    _, batch, offsets = run(tmp_path, patterns, guidance_trigger="every_group", num_replacements=2)
    assert [len(o) for o in offsets] == [2] * 9
    replaced_correct = [o for pattern, replaced in zip(patterns, offsets) for o in replaced if pattern[o] == 1]
    assert replaced_correct  # correct rows are replaceable too (drawn among all rows)
    torch.testing.assert_close(batch["advantages"], hand_advantages(patterns, offsets))


def test_groups_that_are_not_guided_are_not_scored(tmp_path):
    """Comprehension forwards are spent on triggered groups only (here none: one correct row is enough)."""
    trainer, _, offsets = run(tmp_path, [[1, 1, 1, 1], [0, 1, 0, 0]], guidance_trigger="all_fail")
    assert offsets == [[], []]
    metrics = trainer._metrics["train"]
    assert metrics["ampo/scoring_forwards"][-1] == 0.0 and metrics["ampo/triggered_group_fraction"][-1] == 0.0
    assert metrics["ampo/comprehension/mean"][-1] != metrics["ampo/comprehension/mean"][-1]  # NaN: nothing scored
    assert trainer.last_guidance == []


def test_a_pool_no_larger_than_k_is_used_whole_without_scoring(tmp_path):
    trainer, _, offsets = run(tmp_path, [[0, 0, 0, 0], [0, 0, 0, 0]], pool_size=2, num_replacements=2)
    assert [len(o) for o in offsets] == [2, 2]
    assert trainer._metrics["train"]["ampo/scoring_forwards"][-1] == 0.0  # nothing to choose between
    assert all(g["score"] is None for g in trainer.last_guidance)
    assert sorted(g["teacher"] for g in trainer.last_guidance) == ["steps", "steps", "terse", "terse"]


def test_scores_of_every_candidate_of_guided_groups_are_logged(tmp_path):
    trainer, _, _ = run(tmp_path, [[0, 0, 0, 0], [1, 1, 1, 1]], num_replacements=1)
    metrics = trainer._metrics["train"]
    selected = [g["score"] for g in trainer.last_guidance]
    assert len(selected) == 1 and metrics["ampo/comprehension_selected/mean"][-1] == pytest.approx(selected[0])
    # the selected solution has the best score of its pool: the pool's max is the selected one, its min below
    assert metrics["ampo/comprehension/max"][-1] == pytest.approx(selected[0])
    assert 0 < metrics["ampo/comprehension/min"][-1] < selected[0]


def test_gdpo_advantages_are_recomputed_over_the_augmented_groups(tmp_path):
    """normalize_then_sum: each reward normalised within the augmented group, summed, normalised over the batch."""
    patterns = [[0, 0, 0, 0], [1, 0, 0, 0], [1, 1, 0, 1]]
    _, batch, offsets = run(
        tmp_path,
        patterns,
        guidance_trigger="always",
        multi_objective_aggregation="normalize_then_sum",
        reward_funcs=(scripted_correctness_reward, always_correct_reward),
    )
    rewards = torch.tensor(
        [[1.0 if o in replaced else float(r), 1.0] for p, replaced in zip(patterns, offsets) for o, r in enumerate(p)]
    )
    grouped = rewards.view(3, 4, 2)
    normalised = ((grouped - grouped.mean(1, keepdim=True)) / (grouped.std(1, keepdim=True) + 1e-4)).view(12, 2)
    summed = normalised.sum(1)
    expected = (summed - summed.mean()) / (summed.std() + 1e-4)
    torch.testing.assert_close(batch["advantages"], expected, atol=1e-5, rtol=1e-4)
