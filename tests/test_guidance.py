"""Pure decision logic: triggers, row choice, ranking, comprehension score (no model involved)."""

import math

import pytest
import torch

from ampo_trl.guidance import (
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

G = 4


def groups(*rows):
    return torch.tensor([bool(x) for row in rows for x in row])


def test_correctness_mask_threshold_and_nan():
    rewards = torch.tensor([1.0, 0.9, float("nan"), 0.0, 1.2])
    assert correctness_mask(rewards, 1.0).tolist() == [True, False, False, False, True]
    assert correctness_mask(rewards, 0.9).tolist() == [True, True, False, False, True]


def test_all_fail_triggers_only_groups_without_a_correct_row():
    correct = groups([0, 0, 0, 0], [0, 1, 0, 0], [1, 1, 1, 1])
    assert requested_replacements(correct, G, "all_fail", 2).tolist() == [2, 0, 0]


def test_always_replaces_failed_rows_in_every_group_up_to_k():
    correct = groups([0, 0, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1])
    assert requested_replacements(correct, G, "always", 2).tolist() == [2, 1, 0]


def test_every_group_replaces_k_rows_of_every_group_correct_or_not():
    correct = groups([0, 0, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1])
    assert requested_replacements(correct, G, "every_group", 1).tolist() == [1, 1, 1]
    assert requested_replacements(correct, G, "every_group", 9).tolist() == [G - 1] * 3  # one on-policy row stays
    group = torch.tensor([True, True, False, True])
    assert replaceable_rows(group, "every_group").tolist() == [True] * 4
    assert replaceable_rows(group, "all_fail").tolist() == [False, False, True, False]
    assert replaceable_rows(group, "always").tolist() == [False, False, True, False]


def test_never_requests_nothing():
    correct = groups([0, 0, 0, 0], [0, 0, 0, 0])
    assert requested_replacements(correct, G, "never", 2).tolist() == [0, 0]


def test_hybrid_adds_random_groups_with_failures():
    correct = groups([0, 0, 0, 0], [1, 0, 0, 0], [1, 0, 0, 0], [1, 1, 1, 1])
    draws = torch.tensor([0.9, 0.1, 0.5, 0.0])
    requested = requested_replacements(correct, G, "hybrid", 2, hybrid_draws=draws, hybrid_probability=0.3)
    # group 0: all fail; group 1: draw 0.1 < 0.3; group 2: draw 0.5 >= 0.3; group 3: nothing failed
    assert requested.tolist() == [2, 2, 0, 0]
    with pytest.raises(ValueError, match="hybrid_draws"):
        requested_replacements(correct, G, "hybrid", 2)


def test_adaptive_k_aims_at_a_balanced_group():
    correct = torch.tensor([False] * 8 + [True] + [False] * 7 + [True] * 3 + [False] * 5 + [True] * 4 + [False] * 4)
    # c=0,f=8 -> 4 ; c=1,f=7 -> 3 ; c=3,f=5 -> 1 ; c=4 (not under half) -> 0
    assert requested_replacements(correct, 8, "adaptive_k", 2).tolist() == [4, 3, 1, 0]


def test_requested_replacements_rejects_partial_groups_and_unknown_trigger():
    with pytest.raises(ValueError, match="whole groups"):
        requested_replacements(torch.zeros(6, dtype=torch.bool), G, "all_fail", 2)
    with pytest.raises(ValueError, match="Unknown guidance trigger"):
        requested_replacements(torch.zeros(4, dtype=torch.bool), G, "sometimes", 2)


def test_choose_rows_only_picks_failed_rows_and_is_seeded():
    failed = torch.tensor([True, False, True, True, False, True, True, True])
    picks = [tuple(choose_rows_to_replace(failed, 3, make_generator(seed))) for seed in range(50)]
    for pick in picks:
        assert len(set(pick)) == 3 and all(failed[i] for i in pick)
    assert len(set(picks)) > 5  # uniform draws, not always the same rows
    assert choose_rows_to_replace(failed, 3, make_generator(7)) == choose_rows_to_replace(failed, 3, make_generator(7))
    with pytest.raises(ValueError, match="only 6 failed"):
        choose_rows_to_replace(failed, 7, make_generator(0))


def test_choose_rows_is_uniform_over_failed_rows():
    failed = torch.tensor([True] * 8)
    counts = torch.zeros(8)
    for seed in range(2000):
        for i in choose_rows_to_replace(failed, 2, make_generator(seed)):
            counts[i] += 1
    assert counts.sum() == 4000
    assert (counts - 500).abs().max() < 100  # each row ~ 2000 * 2/8


def test_group_seed_is_stable_and_distinguishes_parts():
    assert group_seed(42, 3, 1, "prompt") == group_seed(42, 3, 1, "prompt")
    assert group_seed(42, 3, 1, "prompt") != group_seed(42, 4, 1, "prompt")
    assert group_seed(42, 3, 1, "prompt") != group_seed(42, 3, 1, "prompt!")
    assert 0 <= group_seed("x") < 2**63
    # fixed value: a change here would silently change every recorded run's decisions
    assert group_seed(0, 0, 0, "") == 3420885547518144883


def test_rank_comprehension_prefers_higher_score_then_shorter():
    scores = [0.2, 0.9, 0.9, 0.5]
    lengths = [10, 30, 20, 5]
    assert rank_candidates("comprehension", lengths, scores) == [2, 1, 3, 0]


def test_rank_comprehension_full_tie_keeps_pool_order():
    assert rank_candidates("comprehension", [7, 7, 7], [0.3, 0.3, 0.3]) == [0, 1, 2]


def test_rank_shortest_and_random():
    assert rank_candidates("shortest", [9, 3, 3, 1]) == [3, 1, 2, 0]
    first = rank_candidates("random", [1, 2, 3, 4, 5], generator=make_generator(1))
    assert sorted(first) == [0, 1, 2, 3, 4]
    assert first == rank_candidates("random", [1, 2, 3, 4, 5], generator=make_generator(1))
    orders = {tuple(rank_candidates("random", [1, 2, 3, 4], generator=make_generator(s))) for s in range(30)}
    assert len(orders) > 5


def test_rank_rejects_missing_inputs():
    with pytest.raises(ValueError, match="one score per candidate"):
        rank_candidates("comprehension", [1, 2], [0.5])
    with pytest.raises(ValueError, match="seeded generator"):
        rank_candidates("random", [1, 2])
    with pytest.raises(ValueError, match="Unknown guidance selection"):
        rank_candidates("best", [1])


def test_comprehension_score_geometric_and_arithmetic_means():
    probabilities = torch.tensor([0.5, 0.125])
    logps = probabilities.log()
    assert comprehension_score(logps, "geometric") == pytest.approx(0.25)  # sqrt(0.5 * 0.125)
    assert comprehension_score(logps, "arithmetic") == pytest.approx(0.3125)
    assert comprehension_score(torch.tensor([]), "geometric") == 0.0


def test_comprehension_score_format_mix_and_bf16_rounding():
    logps = torch.tensor([math.log(0.3)])
    assert comprehension_score(logps, "arithmetic", format_score=1.0, format_weight=0.1) == pytest.approx(
        0.9 * 0.3 + 0.1
    )
    rounded = comprehension_score(logps, "arithmetic", round_to_bf16=True)
    assert rounded != pytest.approx(0.3, abs=1e-6) and rounded == pytest.approx(0.3, abs=2e-3)
    assert rounded == float(torch.tensor(0.3, dtype=torch.bfloat16).float())


def test_comprehension_score_is_clipped_to_probability_range():
    assert comprehension_score(torch.tensor([0.0, 0.0]), "geometric") == 1.0
    with pytest.raises(ValueError, match="Unknown comprehension mean"):
        comprehension_score(torch.tensor([0.0]), "median")


def test_quality_score_breaks_ties_as_the_released_code_does():
    scores, lengths = [0.5, 0.9, 0.5, 0.5], [10, 50, 5, 7]
    assert rank_candidates("comprehension", lengths, scores) == [1, 2, 3, 0]  # ties: shorter first
    qualities = [0.2, 0.1, None, 0.7]
    ranked = rank_candidates("comprehension", lengths, scores, tie_break="quality_score", qualities=qualities)
    assert ranked == [1, 3, 0, 2]  # ties: higher quality first, a missing one last
    with pytest.raises(ValueError, match="tie break"):
        rank_candidates("comprehension", lengths, scores, tie_break="longest")


def test_released_assignment_gives_row_j_the_j_mod_remaining_solution():
    assert assign_solutions([1, 4], "ranked") == [0, 1]
    assert assign_solutions([1, 4], "released") == [1, 0]  # odd first row: the second-best solution
    assert assign_solutions([2, 5], "released") == [0, 1]
    assert assign_solutions([3], "released") == [0]  # one solution left: it is taken whatever j
    assert assign_solutions([0, 1, 5], "released") == [0, 2, 1]  # j=1 of [1, 2] -> 2; then 1
    with pytest.raises(ValueError, match="assignment"):
        assign_solutions([0], "random")


# ------------------------------------------------------------------------ boundaries found by mutation testing


def test_correctness_mask_never_counts_nan_as_correct_even_at_threshold_zero():
    # rewards in [-1, 1] may use threshold 0: a NaN (unscorable) row must stay failed, not become 0.0 >= 0
    assert correctness_mask(torch.tensor([float("nan"), 0.0, -0.5]), 0.0).tolist() == [False, True, False]


def test_choose_rows_can_replace_every_failed_row():
    failed = torch.tensor([True, False, True, True])
    assert choose_rows_to_replace(failed, 3, make_generator(0)) == [0, 2, 3]
    assert choose_rows_to_replace(failed, 0, make_generator(0)) == []


def test_hybrid_guides_a_group_with_a_single_failure_and_draws_strictly_below_p():
    correct = groups([1, 1, 1, 0], [1, 1, 1, 0], [1, 0, 0, 0])
    draws = torch.tensor([0.1, 0.3, 0.3])  # a draw equal to p is not below it
    requested = requested_replacements(correct, G, "hybrid", 2, hybrid_draws=draws, hybrid_probability=0.3)
    assert requested.tolist() == [1, 0, 0]


def test_hybrid_probability_defaults_to_zero_all_fail_groups_only():
    correct = groups([0, 0, 0, 0], [1, 0, 0, 0])
    draws = torch.tensor([0.0, 0.0])
    assert requested_replacements(correct, G, "hybrid", 2, hybrid_draws=draws).tolist() == [2, 0]


def test_adaptive_k_rounds_down_on_odd_groups():
    # G = 5: c = 0 -> floor(5 / 2) = 2, c = 1 -> floor(3 / 2) = 1, c = 2 -> 2 * 2 < 5 -> max(1, floor(1 / 2)) = 1
    correct = torch.tensor([False] * 5 + [True] + [False] * 4 + [True] * 2 + [False] * 3 + [True] * 3 + [False] * 2)
    requested = requested_replacements(correct, 5, "adaptive_k", 9)
    assert requested.tolist() == [2, 1, 1, 0] and requested.dtype == torch.long


def test_comprehension_score_defaults_are_the_papers():
    logps = torch.tensor([0.5, 0.125]).log()
    assert comprehension_score(logps) == pytest.approx(0.25)  # geometric mean, no format term
    # format_score defaults to 0: a format weight alone scales the score down
    assert comprehension_score(logps, "arithmetic", format_weight=0.5) == pytest.approx(0.5 * 0.3125)


def test_comprehension_score_clips_rounding_noise_above_one():
    # log_softmax can return tiny positive values for a near-certain token: the score stays a probability
    assert comprehension_score(torch.tensor([1e-3, 2e-3]), "geometric") == 1.0


def test_rows_held_by_process_cut_at_each_process_boundary():
    # 6 rows per process: process 0 holds global rows 0-5, process 1 rows 6-11; row 6 is process 1's first row.
    rows = [0, 5, 6, 11, 12]
    assert rows_held_by_process(rows, 0, 6) == {0: 0, 5: 1}
    assert rows_held_by_process(rows, 1, 6) == {0: 2, 5: 3}
    assert rows_held_by_process(rows, 2, 6) == {0: 4}
    assert rows_held_by_process([], 1, 6) == {}
