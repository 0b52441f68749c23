"""Comprehension scoring sequences and the forward-pass plan (no model forward involved)."""

import pytest

from ampo_trl.answers import cut_at_last_answer_tag
from ampo_trl.comprehension import build_released_scoring_sequence, build_scoring_sequence, plan_scoring_chunks
from ampo_trl.demo.tiny import build_tiny_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return build_tiny_tokenizer()


def test_cut_at_last_answer_tag():
    assert (
        cut_at_last_answer_tag("think <answer>1</answer> again <answer>2</answer>")
        == "think <answer>1</answer> again "
    )
    assert cut_at_last_answer_tag("no tag, \\boxed{3}") is None


def test_scoring_sequence_layout_scores_only_the_gold_tokens(tokenizer):
    prompt_ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is 2+3?"}], add_generation_prompt=True, tokenize=True, return_dict=True
    )["input_ids"]
    teacher = "Two plus three. <answer>6</answer> wait, recheck: <answer>5</answer>"
    sequence = build_scoring_sequence(prompt_ids, teacher, " 5 ", tokenizer, tokenizer.eos_token_id)
    ids = sequence.input_ids
    assert ids[: len(prompt_ids)] == list(prompt_ids)
    assert tokenizer.decode(ids[sequence.answer_start : sequence.answer_end]) == "5"
    text_after_prompt = tokenizer.decode(ids[len(prompt_ids) :], skip_special_tokens=False)
    assert text_after_prompt == "Two plus three. <answer>6</answer> wait, recheck: <answer>5</answer><|im_end|>"
    assert ids[-1] == tokenizer.eos_token_id
    # the tags around the gold are not part of the scored span
    assert tokenizer.decode(ids[sequence.answer_start - 1 : sequence.answer_start]) == "<answer>"
    assert tokenizer.decode(ids[sequence.answer_end : sequence.answer_end + 1]) == "</answer>"


def test_scoring_sequence_replaces_the_teacher_answer_with_the_gold(tokenizer):
    sequence = build_scoring_sequence([1, 2], "so <answer>41</answer>", "42", tokenizer, tokenizer.eos_token_id)
    assert tokenizer.decode(sequence.input_ids[2:]) == "so <answer>42</answer><|im_end|>"


def test_scoring_sequence_none_without_tag_or_gold(tokenizer):
    assert build_scoring_sequence([1], "\\boxed{5}", "5", tokenizer, tokenizer.eos_token_id) is None
    assert build_scoring_sequence([1], "<answer>5</answer>", "  ", tokenizer, tokenizer.eos_token_id) is None


def _flatten(plan):
    return sorted(i for chunks in plan for chunk in chunks for i in chunk)


@pytest.mark.parametrize("num_processes", [1, 2, 3])
def test_plan_covers_every_candidate_once_with_equal_forward_counts(num_processes):
    lengths = [50, 10, 300, 40, 40, 7, 120, 90, 60]
    plan = plan_scoring_chunks(lengths, num_processes, token_budget=200)
    assert len(plan) == num_processes
    assert _flatten(plan) == list(range(len(lengths)))
    assert len({len(chunks) for chunks in plan}) == 1  # same number of forwards on every process


def test_plan_respects_the_token_budget():
    lengths = [50, 10, 30, 40, 40, 7, 20, 90, 60, 33, 12]
    for budget in (60, 100, 250, 1000):
        plan = plan_scoring_chunks(lengths, 2, token_budget=budget)
        for chunks in plan:
            for chunk in chunks:
                if len(chunk) > 1:
                    assert len(chunk) * max(lengths[i] for i in chunk) <= budget


def test_plan_gives_an_overlong_candidate_its_own_forward():
    plan = plan_scoring_chunks([500, 10, 10], 1, token_budget=100)
    assert [500] in [[[500, 10, 10][i] for i in chunk] for chunk in plan[0]]


def test_plan_balances_tokens_across_processes():
    lengths = [100] * 6 + [10] * 6
    plan = plan_scoring_chunks(lengths, 2, token_budget=10_000)
    loads = [sum(lengths[i] for chunk in chunks for i in chunk) for chunks in plan]
    assert loads == [330, 330]


def test_plan_pads_the_less_loaded_process_with_dummy_forwards():
    plan = plan_scoring_chunks([100], 3, token_budget=1000)
    assert sorted(len([c for c in chunks if c]) for chunks in plan) == [0, 0, 1]
    assert all(len(chunks) == 1 for chunks in plan)


def test_plan_empty_and_single_process_budget_packing():
    assert plan_scoring_chunks([], 2, 100) == [[], []]
    plan = plan_scoring_chunks([10, 10, 10, 10], 1, token_budget=20)
    assert [len(chunk) for chunk in plan[0]] == [2, 2]


def test_released_scoring_sequence_keeps_the_whitespace_and_finds_the_gold_by_offsets(tokenizer):
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "2+3?"}], add_generation_prompt=True, tokenize=False
    )
    sequence = build_released_scoring_sequence(prompt, "Two plus three.<answer>\n 6</answer>", "5", tokenizer)
    text = tokenizer.decode(sequence.input_ids, skip_special_tokens=False)
    assert (
        text == prompt + "Two plus three.<answer>\n 5 </answer><|im_end|>"
    )  # whitespace kept, a space after the gold
    assert tokenizer.decode(sequence.input_ids[sequence.answer_start : sequence.answer_end]) == "5"
    no_space = build_released_scoring_sequence(prompt, "So<answer>6</answer>", "12", tokenizer)
    assert tokenizer.decode(no_space.input_ids, skip_special_tokens=False).endswith(
        "So<answer> 12 </answer><|im_end|>"
    )
    assert tokenizer.decode(no_space.input_ids[no_space.answer_start : no_space.answer_end]) == "12"
    # exactly one <answer>, something after it, and a gold are required (the released code scores 0 otherwise)
    assert build_released_scoring_sequence(prompt, "<answer>1</answer><answer>5</answer>", "5", tokenizer) is None
    assert build_released_scoring_sequence(prompt, "no tag \\boxed{5}", "5", tokenizer) is None
    assert build_released_scoring_sequence(prompt, "so <answer>  ", "5", tokenizer) is None
    assert build_released_scoring_sequence(prompt, "so <answer>5</answer>", " ", tokenizer) is None


def test_plan_keeps_padding_within_the_bound():
    lengths = [200, 190, 160, 150, 100, 90, 20, 12, 10]
    plan = plan_scoring_chunks(lengths, 1, token_budget=10_000)
    for chunk in plan[0]:
        widest = max(lengths[i] for i in chunk)
        assert all(widest <= 1.25 * lengths[i] for i in chunk)
    assert [[lengths[i] for i in chunk] for chunk in plan[0]] == [[200, 190, 160], [150], [100, 90], [20], [12, 10]]
    one_pass = plan_scoring_chunks(lengths, 1, token_budget=10_000, max_padding=float("inf"))
    assert len(one_pass[0]) == 1  # without the bound everything fits in one pass, at 1800 padded for 932 real tokens


def test_plan_rejects_zero_processes():
    with pytest.raises(ValueError, match="num_processes must be >= 1"):
        plan_scoring_chunks([10], 0, token_budget=100)
