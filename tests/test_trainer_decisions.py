"""Decisions of the trainer that a single-line bug could change without breaking a shape: the seed key (every
optimizer step draws anew; the global RNG is neither read nor consumed), the source of teacher rows seen by the
reward functions (`completion_source` exempts them from the repetition penalty), and comprehension selection with
multi-token golds against probabilities computed by hand, where the geometric and arithmetic means disagree."""

import itertools
import random

import numpy as np
import pytest
import torch
from helpers import (
    addition_rows,
    decisions,
    exact_answer_reward,
    generate,
    hand_gold_logps,
    make_trainer,
    scripted_correctness_reward,
    scripted_rows,
)
from trl import GRPOTrainer

from ampo_trl.demo.tiny import build_tiny_model_and_tokenizer
from ampo_trl.rewards import repetition_penalty_reward

# ------------------------------------------------------------------------------------------------------ seed key

# Every random decision has some freedom here: 3 failed rows for k = 2 (row choice), hybrid draws against p = 0.5
# for groups with a correct row, and a random ranking of 3 solutions.
RANDOM_PATTERNS = [[0, 0, 0, 0], [1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1], [1, 0, 0, 0]] * 2
RANDOM_DECISIONS = dict(guidance_trigger="hybrid", hybrid_trigger_probability=0.5, guidance_selection="random")

DISTURBANCE = {"seed": None, "draws": 0}


def global_rng_disturbing_reward(completions, **kwargs):
    """Runs between sampling and the guidance decisions: re-seeds and consumes the global RNGs (torch, numpy,
    random) as a user's reward function may. Returns 0 (adds nothing to the total reward)."""
    if DISTURBANCE["seed"] is not None:
        torch.manual_seed(DISTURBANCE["seed"])
        np.random.seed(DISTURBANCE["seed"])
        random.seed(DISTURBANCE["seed"])
    torch.rand(DISTURBANCE["draws"])
    np.random.rand(DISTURBANCE["draws"])
    for _ in range(DISTURBANCE["draws"]):
        random.random()
    return [0.0] * len(completions)


def random_decision_trainer(tmp_path, first_operand=11, patterns=RANDOM_PATTERNS, **overrides):
    rows = scripted_rows(patterns, first_operand=first_operand)
    trainer = make_trainer(
        tmp_path,
        rows=rows,
        reward_funcs=[scripted_correctness_reward, global_rng_disturbing_reward],
        per_device_train_batch_size=4 * len(rows),
        **{**RANDOM_DECISIONS, **overrides},
    )
    return trainer, rows


def test_decisions_change_with_the_optimizer_step_and_repeat_for_the_same_step(tmp_path):
    trainer, rows = random_decision_trainer(tmp_path)
    by_step = {}
    for step in (0, 1, 0, 7):
        trainer.state.global_step = step
        generate(trainer, rows)
        by_step.setdefault(step, []).append(decisions(trainer))
    assert by_step[0][0] == by_step[0][1]  # the same generation batch decides the same
    assert by_step[0][0] != by_step[1][0] and by_step[1][0] != by_step[7][0] and by_step[0][0] != by_step[7][0]
    # each kind of draw changes with the step: rows of the always-guided group, hybrid draws, rankings
    first, second = by_step[0][0], by_step[1][0]
    assert {row for row, _ in first} != {row for row, _ in second}
    assert [teacher for _, teacher in first] != [teacher for _, teacher in second]


def test_decisions_of_a_fixed_batch_are_pinned(tmp_path):
    """Recorded runs stay reproducible: the seeds of the hybrid draws, of the row choice and of the random ranking
    ((seed, step, micro-step, group, prompt) and a salt per kind of decision) are part of the contract, as
    `group_seed`'s fixed value in test_guidance.py. The outcome depends on no model output (scripted rewards, random
    ranking). Change this list only on purpose, with a CHANGELOG note: every recorded run's decisions change."""
    trainer, rows = random_decision_trainer(tmp_path)
    generate(trainer, rows)
    assert decisions(trainer) == [
        (1, "steps"), (2, "verbose"), (25, "steps"), (26, "terse"),
        (32, "terse"), (34, "steps"), (36, "terse"), (39, "steps"),
    ]  # fmt: skip


def test_decisions_depend_on_the_prompt_not_only_on_the_group_index(tmp_path):
    """The seed key holds the prompt: two batches of the same step whose groups have the same outcomes but other
    prompts draw differently (otherwise every run would replace the same offsets of group g at step s)."""
    chosen = []
    for first_operand in (11, 31):
        trainer, rows = random_decision_trainer(tmp_path, first_operand=first_operand)
        generate(trainer, rows)
        chosen.append(decisions(trainer))
    assert chosen[0] != chosen[1]


@pytest.mark.parametrize(
    "disturbance", [{"seed": 1, "draws": 0}, {"seed": 12345, "draws": 7}, {"seed": None, "draws": 3}]
)
def test_decisions_do_not_depend_on_the_global_rng(tmp_path, monkeypatch, disturbance):
    monkeypatch.setitem(DISTURBANCE, "seed", None)
    monkeypatch.setitem(DISTURBANCE, "draws", 0)
    trainer, rows = random_decision_trainer(tmp_path)
    generate(trainer, rows)
    reference = decisions(trainer)
    assert len({row // 4 for row, _ in reference}) >= 4  # several groups guided, so there is something to compare
    monkeypatch.setitem(DISTURBANCE, "seed", disturbance["seed"])
    monkeypatch.setitem(DISTURBANCE, "draws", disturbance["draws"])
    generate(trainer, rows)  # same sampling seed: same completions, but another global RNG state at decision time
    assert decisions(trainer) == reference


def test_guidance_consumes_no_global_randomness(tmp_path):
    """Guidance must not shift the global RNG stream (that would change the sampling of every later batch): after a
    guided generation batch the torch RNG is where plain GRPO leaves it."""
    rows = addition_rows(2)
    states = []
    for trainer_class in (GRPOTrainer, None):
        trainer = (
            make_trainer(tmp_path, GRPOTrainer)
            if trainer_class
            else make_trainer(tmp_path, guidance_trigger="always", guidance_selection="random")
        )
        batch = generate(trainer, rows)
        states.append(torch.random.get_rng_state())
    assert batch["ampo_is_teacher"].sum() == 4
    assert torch.equal(states[0], states[1])


# ---------------------------------------------------------------------------------------- completion_source

# one 10-word window repeated 10 times: the repetition penalty fires on a sampled completion with this text
REPEATED = " ".join(["one two three four five six seven eight nine ten"] * 10)


def test_teacher_rows_are_exempt_from_the_repetition_penalty(tmp_path):
    assert repetition_penalty_reward([REPEATED + " <answer>3</answer>"]) == [-1.0]  # as a sampled completion
    rows = addition_rows(2)
    for row in rows:
        row["teacher_solutions"] = [
            {"teacher": "repetitive", "text": f"{REPEATED} <answer>{row['answer']}</answer>"},
            {"teacher": "terse", "text": f"<answer>{row['answer']}</answer>"},
        ]
    trainer = make_trainer(
        tmp_path,
        rows=rows,
        reward_funcs=[exact_answer_reward, repetition_penalty_reward],
        guidance_selection="shortest",  # not the repetitive one first ...
        num_replacements=2,  # ... but both solutions of each pool are used
        max_teacher_length=512,
        scale_rewards="none",
        log_completions=True,
    )
    batch = generate(trainer, rows)
    teacher = batch["ampo_is_teacher"]
    assert teacher.sum() == 4 and {t for _, t in decisions(trainer)} == {"repetitive", "terse"}
    # rewards (exact, repetition): sampled rows (0, 0), teacher rows (1, 0), so mean 0.5 per group
    torch.testing.assert_close(batch["advantages"], torch.where(teacher, 0.5, -0.5))
    assert trainer._metrics["train"]["ampo/teacher_reward_mean"][-1] == 1.0
    logged = list(trainer._logs["rewards"]["repetition_penalty_reward"])[-8:]
    assert logged == [0.0] * 8


def test_reward_functions_see_the_teacher_name_as_completion_source(tmp_path):
    seen = []

    def source_recording_reward(completions, completion_source=None, **kwargs):
        seen.append(completion_source)
        return [0.0] * len(completions)

    # Default (require_verified_teachers): every candidate of the two failed groups is verified by the reward
    # functions before selection, once each, so the chosen rows' rewards come from that call.
    trainer = make_trainer(tmp_path, reward_funcs=[exact_answer_reward, source_recording_reward])
    generate(trainer, addition_rows(2))
    sampled_call, teacher_call = seen
    assert sampled_call is None  # sampled rows carry no source column: they are the policy's
    assert sorted(teacher_call) == sorted(["terse", "steps", "verbose"] * 2)
    assert {t for _, t in decisions(trainer)} <= set(teacher_call)
    # Without verification, only the chosen solutions are scored, after selection.
    seen.clear()
    trainer = make_trainer(
        tmp_path, reward_funcs=[exact_answer_reward, source_recording_reward], require_verified_teachers=False
    )
    generate(trainer, addition_rows(2))
    sampled_call, teacher_call = seen
    assert sampled_call is None
    assert sorted(teacher_call) == sorted(t for _, t in decisions(trainer)) and len(teacher_call) == 4


# ------------------------------------------------------------------------------------ comprehension selection

PROMPT = [{"role": "user", "content": "What is 100+23?"}]
GOLD = "123"  # three byte tokens: the geometric and arithmetic means of their probabilities differ
REASONINGS = [
    "",
    "So ",
    "The sum is 123. ",
    "Add them: ",
    "100 plus 23 is 123. ",
    "Carry nothing. ",
    "Easy: ",
    "Hmm. ",
    "Think: units 3, tens 2, hundreds 1. ",
    "Result ",
    "We get ",
    "Answer follows. ",
]
SHARPNESS = 8.0  # scales the final norm: a random tiny model is nearly uniform, and both means then agree


def sharpen(model):
    with torch.no_grad():
        model.model.norm.weight.mul_(SHARPNESS)


@pytest.fixture(scope="module")
def disagreeing_pair():
    """Two solutions A, B with geometric mean A > B but arithmetic mean A < B (margins >= 5%), and their means."""
    model, tokenizer = build_tiny_model_and_tokenizer(seed=0)
    sharpen(model)
    probabilities = {
        r: hand_gold_logps(model, tokenizer, PROMPT, f"{r}<answer>{GOLD}</answer>", GOLD).double().exp()
        for r in REASONINGS
    }
    geometric = {r: float(p.log().mean().exp()) for r, p in probabilities.items()}
    arithmetic = {r: float(p.mean()) for r, p in probabilities.items()}
    candidates = [
        (min(geometric[a] / geometric[b], arithmetic[b] / arithmetic[a]), a, b)
        for a, b in itertools.permutations(REASONINGS, 2)
        if geometric[a] > geometric[b] and arithmetic[a] < arithmetic[b]
    ]
    margin, a, b = max(candidates, default=(0.0, None, None))
    assert margin >= 1.05, "no pair of solutions on which the two means disagree clearly: change REASONINGS"
    return {"geometric": (a, geometric[a]), "arithmetic": (b, arithmetic[b])}


@pytest.mark.parametrize("mean", ["geometric", "arithmetic"])
def test_comprehension_mean_selects_the_hand_computed_best_solution(tmp_path, disagreeing_pair, mean):
    (a, _), (b, _) = disagreeing_pair["geometric"], disagreeing_pair["arithmetic"]
    row = {
        "prompt": PROMPT,
        "answer": GOLD,
        "teacher_solutions": [  # B first: pool order must not decide
            {"teacher": "B", "text": f"{b}<answer>{GOLD}</answer>"},
            {"teacher": "A", "text": f"{a}<answer>{GOLD}</answer>"},
        ],
    }
    trainer = make_trainer(tmp_path, rows=[row], comprehension_mean=mean, num_replacements=1)
    sharpen(trainer.model)
    generate(trainer, [row])
    ((_, chosen),) = decisions(trainer)
    winner, expected_score = disagreeing_pair[mean]
    assert chosen == ("A" if winner == a else "B")
    assert trainer.last_guidance[0]["score"] == pytest.approx(expected_score, rel=1e-4)


def test_random_selection_draws_a_new_ranking_for_every_group_and_step(tmp_path):
    """r_random: the teacher of each group is a seeded draw per (step, group, prompt), not one permutation reused by
    every group (8 failing groups, k = 1, the same three teachers in every pool)."""
    trainer, rows = random_decision_trainer(
        tmp_path, guidance_trigger="all_fail", num_replacements=1, patterns=[[0, 0, 0, 0]] * 8
    )
    per_step = []
    for step in range(4):
        trainer.state.global_step = step
        generate(trainer, rows)
        per_step.append([teacher for _, teacher in decisions(trainer)])
    assert all(len(teachers) == 8 for teachers in per_step)
    assert all(len(set(teachers)) > 1 for teachers in per_step)  # groups of one step differ
    assert len({teachers[0] for teachers in per_step}) > 1  # the same group differs between steps
