"""scripts/benchmark.py: the measurements a scenario returns (tokens, phase times) and the per-round ratios."""

import argparse

import pytest

from ampo_trl.cli.benchmark import TIMED_PHASES, per_round_ratios, run_scenario


def _scenario(worker: str) -> dict:
    args = argparse.Namespace(
        worker=worker, steps=2, num_prompts=2, num_generations=4, micro_batches=2, max_completion_length=16,
        teacher_tokens=40, max_teacher_length=64, length_grouping="guided", threads=1, cpu=True,
    )  # fmt: skip
    return run_scenario(args)


def test_triggered_ampo_scenario_times_every_phase_and_counts_teacher_tokens():
    ampo, grpo = _scenario("ampo-triggered"), _scenario("grpo-triggered")
    assert len(ampo["step_times"]) == len(grpo["step_times"]) == 2  # the warm-up step is dropped
    assert set(ampo["phase_times"]) == set(TIMED_PHASES)  # GRPO has no guidance, verification or scoring
    assert set(grpo["phase_times"]) == {"generate_and_score"}
    for step, phases in enumerate(zip(*(ampo["phase_times"][p] for p in TIMED_PHASES), strict=True)):
        generate, guidance, verification, scoring = phases
        # nested phases: each inside the one before it, and all inside the step
        assert 0 < verification <= guidance and 0 < scoring <= guidance <= generate < ampo["step_times"][step]
    assert ampo["replaced_rows"] > 0 and ampo["scoring_forwards"] > 0
    # teacher rows (~40 tokens) replace completions of at most 16: more real tokens in the loss pass than GRPO's
    assert ampo["real_tokens"] > grpo["real_tokens"] > 0
    assert ampo["padded_tokens"] >= ampo["real_tokens"] and grpo["padded_tokens"] >= grpo["real_tokens"]


def test_per_round_ratios_pair_the_rounds():
    assert per_round_ratios([2.0, 3.0], [1.0, 2.0]) == pytest.approx([2.0, 1.5])
    with pytest.raises(ValueError):
        per_round_ratios([1.0], [1.0, 2.0])
