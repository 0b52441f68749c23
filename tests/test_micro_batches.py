"""Length-aware micro-batches (`ampo_trl.micro_batches`): the pure regrouping on hand-built batches, and on a real
guided batch the proof that it leaves the loss and its gradients unchanged for every TRL loss type."""

import pytest
import torch
from helpers import addition_rows, generate, make_trainer
from trl.trainer.utils import split_tensor_dict

from ampo_trl.micro_batches import (
    completion_lengths,
    concatenate,
    group_by_length,
    length_grouped_rows,
    padding_stats,
    per_token_keys,
    take_rows,
)


def hand_batch(lengths, width=8):
    rows = len(lengths)
    mask = torch.zeros(rows, width, dtype=torch.long)
    for row, length in enumerate(lengths):
        mask[row, :length] = 1
    return {
        "prompt_ids": torch.arange(rows * width).view(rows, width),  # as wide as the completions on purpose
        "prompt_mask": torch.ones(rows, width, dtype=torch.long),
        "completion_ids": torch.arange(rows * width).view(rows, width) * mask,
        "completion_mask": mask,
        "old_per_token_logps": -torch.rand(rows, width),
        "advantages": torch.arange(rows, dtype=torch.float),
        "num_items_in_batch": torch.tensor(float(sum(lengths))),
        "texts": [f"row{row}" for row in range(rows)],
        "absent": None,
    }


def test_rows_are_sorted_by_length_then_cut_into_equal_micro_batches():
    assert length_grouped_rows([5, 1, 3, 1, 8, 2], 3) == [[1, 3], [5, 2], [0, 4]]
    with pytest.raises(ValueError, match="equal micro-batches"):
        length_grouped_rows([1, 2, 3], 2)


def test_lengths_come_from_the_last_unmasked_position():
    mask = torch.tensor([[1, 1, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]])
    assert completion_lengths(mask) == [2, 3, 0]


def test_per_token_keys_leave_out_prompts_and_per_row_fields():
    batch = hand_batch([3, 5])
    assert per_token_keys(batch) == ["completion_ids", "completion_mask", "old_per_token_logps"]


def test_concatenate_undoes_trl_split_and_take_rows_selects_and_cuts():
    batch = hand_batch([5, 1, 3, 1])
    joined = concatenate(split_tensor_dict(batch, 2))
    for key in ("completion_ids", "completion_mask", "old_per_token_logps", "advantages"):
        assert torch.equal(joined[key], batch[key])
    assert joined["texts"] == batch["texts"] and joined["absent"] is None
    assert joined["num_items_in_batch"] is batch["num_items_in_batch"]
    taken = take_rows(batch, [3, 1], width=2)
    assert taken["completion_ids"].shape == (2, 2) and taken["prompt_ids"].shape == (2, 8)  # prompts never cut
    assert taken["texts"] == ["row3", "row1"] and taken["advantages"].tolist() == [3.0, 1.0]


def test_group_by_length_cuts_each_micro_batch_to_its_longest_row():
    batch = hand_batch([5, 1, 3, 1, 8, 2])
    grouped = group_by_length(split_tensor_dict(batch, 3))
    assert [b["completion_ids"].size(1) for b in grouped] == [1, 3, 8]
    assert [b["texts"] for b in grouped] == [["row1", "row3"], ["row5", "row2"], ["row0", "row4"]]
    real, padded = padding_stats(grouped)
    assert real == 20 and padded == 2 * (1 + 3 + 8)
    assert padding_stats(split_tensor_dict(batch, 3)) == (20, 6 * 8)
    rounded = group_by_length(split_tensor_dict(batch, 3), pad_to_multiple_of=4)
    assert [b["completion_ids"].size(1) for b in rounded] == [4, 4, 8]
    every_token = torch.cat([b["completion_ids"][b["completion_mask"].bool()] for b in grouped])
    assert sorted(every_token.tolist()) == sorted(batch["completion_ids"][batch["completion_mask"].bool()].tolist())


LOSS_SETTINGS = [
    {"loss_type": "grpo"},
    {"loss_type": "bnpo"},
    {"loss_type": "dr_grpo"},
    {"loss_type": "dapo"},
    {"loss_type": "cispo"},
    {"loss_type": "sapo"},
    {"loss_type": "vespo"},
    {"loss_type": "luspo", "importance_sampling_level": "sequence"},
    {"loss_type": "dapo", "off_policy_aggregation": "token", "beta": 0.0},
    {"loss_type": "dr_grpo", "off_policy_aggregation": "constant"},
    {"loss_type": "grpo", "entropy_coef": 0.01},
]


@pytest.mark.parametrize("settings", LOSS_SETTINGS, ids=lambda s: "-".join(str(v) for v in s.values()))
def test_cutting_micro_batches_leaves_loss_and_gradients_unchanged(tmp_path, settings):
    # 16 rows (4 groups, long teacher rows in the guided ones) in 4 micro-batches of 4 rows.
    trainer = make_trainer(tmp_path, per_device_train_batch_size=4, gradient_accumulation_steps=4, **settings)
    trainer.current_gradient_accumulation_steps = 4
    batch = generate(trainer, addition_rows(4))
    assert batch["ampo_is_teacher"].any()
    micro_batches = split_tensor_dict(batch, 4)
    joined = concatenate(micro_batches)
    lengths = completion_lengths(joined["completion_mask"])
    cut = group_by_length(micro_batches)
    uncut = [take_rows(joined, rows) for rows in length_grouped_rows(lengths, 4)]
    assert sum(b["completion_ids"].numel() for b in cut) < sum(b["completion_ids"].numel() for b in uncut)

    def loss_and_gradients(micro_batch_list):
        trainer.model.zero_grad(set_to_none=True)
        total = 0.0
        for micro_batch in micro_batch_list:
            loss = trainer.compute_loss(trainer.model, micro_batch)
            loss.backward()
            total += loss.item()
        return total, {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None}

    loss_cut, grads_cut = loss_and_gradients(cut)
    loss_uncut, grads_uncut = loss_and_gradients(uncut)
    assert loss_cut == pytest.approx(loss_uncut, rel=1e-5, abs=1e-7)
    assert grads_cut.keys() == grads_uncut.keys()
    for name in grads_cut:
        torch.testing.assert_close(grads_cut[name], grads_uncut[name], rtol=1e-4, atol=1e-6, msg=name)
