"""`recipes/qwen2.5-7b-instruct/released_code.yaml` reproduces the released code's training step.

One generation batch of the tiny model under the recipe's AMPO and loss settings (sizes shrunk); its loss and
gradients must equal an independent, hand-written computation of the released code's formula (`mix_actor.py`,
`mix_core_alg.py`; docs/algorithm.md, "Paper vs released code"):

    loss_m = (B_m / N) * [ (1/L) * sum_{i in m, t} M_it * l_it  -  c_H * sum(M * H) / sum(M) ]
    l_it   = -A_i * p/(p + 0.1)                                      on teacher tokens
           = max(-A rho, -A clip(rho, 0.8, 1.2)), and min(that, -10 A) when A < 0,  on the student's tokens

with B_m the micro-batch's rows, N the rows of an optimizer step, L the maximum response length, H the entropy of
every token (teacher ones included), and A = r - mean_group(r) with the teacher rows' reward forced to 1.
"""

from pathlib import Path

import pytest
import torch
import yaml
from helpers import addition_rows, generate, make_trainer
from trl.trainer.utils import split_tensor_dict

from ampo_trl.answers import completion_text
from ampo_trl.micro_batches import group_by_length
from ampo_trl.rewards import ampo_released_reward, resolve_reward_funcs

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "qwen2.5-7b-instruct" / "released_code.yaml"
# The recipe's settings of the step itself; model, data, batch sizes and hardware are the tiny test's own.
STEP_KEYS = (
    "reward_weights", "correctness_threshold", "scale_rewards", "delta", "entropy_coef", "entropy_on_teacher_tokens",
    "loss_type", "released_loss_scale", "epsilon", "epsilon_high", "beta", "temperature", "guidance_trigger",
    "num_replacements", "guidance_selection", "comprehension_mean", "comprehension_format_weight",
    "comprehension_round_to_bf16", "comprehension_sequence", "comprehension_tie_break", "teacher_assignment",
    "shaping_gamma", "off_policy_aggregation", "teacher_reward_floor", "require_verified_teachers",
)  # fmt: skip


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    recipe = yaml.safe_load(RECIPE.read_text())
    settings = {key: recipe[key] for key in STEP_KEYS}
    assert settings["loss_type"] == "dr_grpo" and settings["delta"] == 10.0 and settings["released_loss_scale"]
    trainer = make_trainer(
        tmp_path_factory.mktemp("released"),
        reward_funcs=resolve_reward_funcs(recipe["reward_funcs"]),
        per_device_train_batch_size=4,
        gradient_accumulation_steps=2,
        max_completion_length=96,  # the released code's L bounds teacher rows too
        **settings,
    )
    trainer.current_gradient_accumulation_steps = 2
    rows = addition_rows(2)
    batch = generate(trainer, rows)
    return trainer, rows, batch, settings


def test_advantages_are_mean_centred_with_teacher_rewards_forced_to_one(released):
    trainer, rows, batch, _ = released
    teacher = batch["ampo_is_teacher"]
    assert teacher.sum() == 4  # k = 2 in both all-failed groups
    texts = trainer.processing_class.batch_decode(batch["completion_ids"], skip_special_tokens=True)
    for group, row in enumerate(rows):
        members = range(4 * group, 4 * group + 4)
        rewards = [
            1.0
            if teacher[i]
            else ampo_released_reward([completion_text(texts[i])], answer=[row["answer"]], completion_source=[None])[0]
            for i in members
        ]
        mean = sum(rewards) / 4
        expected = torch.tensor([reward - mean for reward in rewards])
        torch.testing.assert_close(batch["advantages"][4 * group : 4 * group + 4].cpu(), expected, atol=1e-6, rtol=0)


def released_step_by_hand(model, micro_batches, settings, max_length):
    """The released code's loss for the micro-batches of one optimizer step, written from its formula."""
    rows_per_step = sum(batch["completion_ids"].size(0) for batch in micro_batches)
    total = 0.0
    for batch in micro_batches:
        prompt_width = batch["prompt_ids"].size(1)
        ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], dim=1)
        attention = torch.cat([batch["prompt_mask"], batch["completion_mask"]], dim=1)
        logits = model(input_ids=ids, attention_mask=attention).logits.float() / settings["temperature"]
        logits = logits[:, prompt_width - 1 : -1]  # the positions that predict the completion tokens
        log_probs = logits.log_softmax(-1)
        logp = log_probs.gather(-1, batch["completion_ids"].unsqueeze(-1)).squeeze(-1)
        entropy = -(log_probs.exp() * log_probs).sum(-1)
        old = batch.get("old_per_token_logps")
        old = logp.detach() if old is None else old
        ratio = torch.exp(torch.clamp(logp - old, -20.0, 20.0))
        advantages = batch["advantages"].unsqueeze(1)
        low, high = 1 - settings["epsilon"], 1 + settings["epsilon_high"]
        on_policy = torch.maximum(-advantages * ratio, -advantages * ratio.clamp(low, high))
        on_policy = torch.where(advantages < 0, torch.minimum(on_policy, -advantages * settings["delta"]), on_policy)
        p = logp.exp()
        off_policy = -advantages * p / (p + settings["shaping_gamma"])
        teacher = batch["ampo_is_teacher"].unsqueeze(1)
        token_loss = torch.where(teacher, off_policy, on_policy)
        mask = batch["completion_mask"].float()
        rows = batch["completion_ids"].size(0)
        policy = (token_loss * mask).sum() / max_length
        entropy_mean = (entropy * mask).sum() / mask.sum()
        total = total + rows / rows_per_step * (policy - settings["entropy_coef"] * entropy_mean)
    return total


@torch.no_grad()
def shifted_old_logps(model, batch):
    """Sampling log-probs 3 nats off the current ones (+-, alternating): ratios of e^3 and e^-3, so the PPO clip and
    the dual clip both bind, as they do after a few optimizer steps on one generation batch."""
    prompt_width = batch["prompt_ids"].size(1)
    ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], dim=1)
    attention = torch.cat([batch["prompt_mask"], batch["completion_mask"]], dim=1)
    logits = model(input_ids=ids, attention_mask=attention).logits.float()[:, prompt_width - 1 : -1]
    logp = logits.log_softmax(-1).gather(-1, batch["completion_ids"].unsqueeze(-1)).squeeze(-1)
    signs = torch.ones_like(logp)
    signs[:, 1::2] = -1
    return logp - 3.0 * signs


@pytest.mark.parametrize("policy", ["at_sampling", "moved"])
def test_one_step_matches_the_released_formula(released, policy):
    trainer, _, batch, settings = released
    micro_batches = group_by_length(split_tensor_dict(batch, 2))  # what `_prepare_inputs` hands to the loss
    model = trainer.model
    if policy == "moved":
        for micro_batch in micro_batches:
            micro_batch["old_per_token_logps"] = shifted_old_logps(model, micro_batch)
    model.zero_grad(set_to_none=True)
    loss = sum(trainer.compute_loss(model, micro_batch) for micro_batch in micro_batches)
    loss.backward()
    ours = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    expected = released_step_by_hand(model, micro_batches, settings, trainer.max_completion_length)
    expected.backward()
    theirs = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5, abs=1e-7)
    assert ours.keys() == theirs.keys()
    for name in ours:
        torch.testing.assert_close(ours[name], theirs[name], rtol=1e-4, atol=1e-7, msg=name)
    # the scale matters: TRL's dr_grpo alone (a mean over rows) would be 4x smaller on the policy part
    assert abs(expected.item()) > 0


def test_the_released_reward_penalises_repetition_only_where_the_reward_is_not_zero():
    repetitive = " ".join(["one two three four five six seven eight nine ten"] * 10)
    completions = [
        "<answer>4</answer>",  # correct, formatted: 1.0
        f"{repetitive} <answer>4</answer>",  # correct but repetitive: 1.0 - 1 = 0.0, a failure for the trigger
        f"{repetitive} <answer>5</answer>",  # wrong, formatted, repetitive: 0.1 - 1
        repetitive,  # no answer, no format: reward 0, so no penalty
    ]
    rewards = ampo_released_reward(completions, answer=["4"] * 4, completion_source=[None] * 4)
    assert rewards == pytest.approx([1.0, 0.0, -0.9, 0.0])
    teacher = ampo_released_reward(completions[1:2], answer=["4"], completion_source=["Qwen3-8B"])
    assert teacher == [1.0]  # teacher rows are never penalised
