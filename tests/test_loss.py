"""The AMPO loss: shaping function, aggregation, and the three guarantees of ampo_trl.loss."""

import copy

import pytest
import torch
from helpers import addition_rows, generate, make_trainer
from trl import GRPOTrainer

from ampo_trl.loss import (
    aggregate_off_policy_loss,
    micro_batch_normalizer,
    off_policy_per_token_loss,
    shaping_function,
)

# ----------------------------------------------------------------------------------------------------- pure maths


def test_shaping_function_values():
    p = torch.tensor([0.0, 0.1, 0.9, 1.0])
    assert shaping_function(p, 0.1).tolist() == pytest.approx([0.0, 0.5, 0.9, 1.0 / 1.1])


def test_shaping_gradient_is_gamma_p_over_p_plus_gamma_squared():
    logp = torch.log(torch.tensor([[0.05, 0.5, 0.95]])).requires_grad_()
    advantage = torch.tensor([2.0])
    off_policy_per_token_loss(logp, advantage, gamma=0.1).sum().backward()
    p = logp.detach().exp()
    expected = -2.0 * 0.1 * p / (p + 0.1) ** 2  # d/dlogp of -A p/(p+gamma)
    assert logp.grad[0].tolist() == pytest.approx(expected[0].tolist(), rel=1e-5)
    # low-probability tokens still get a sizeable gradient, high-probability ones a small one
    assert abs(logp.grad[0, 0]) > abs(logp.grad[0, 2])


def test_sequence_aggregation_weight_does_not_depend_on_length():  # guarantee (b)
    per_token = torch.full((2, 10), 3.0)
    mask = torch.zeros(2, 10)
    mask[0, :3] = 1  # short teacher solution
    mask[1, :10] = 1  # long teacher solution
    teacher = torch.tensor([True, True])
    weights = []
    for row in range(2):
        only_row = torch.zeros(2, dtype=torch.bool)
        only_row[row] = True
        weights.append(aggregate_off_policy_loss(per_token, mask, only_row & teacher, "sequence").item())
    assert weights == [3.0, 3.0]
    token_weights = [
        aggregate_off_policy_loss(per_token, mask, torch.tensor([r == 0, r == 1]), "token").item() for r in range(2)
    ]
    assert token_weights == [9.0, 30.0]  # token mode: proportional to length


def test_aggregation_ignores_on_policy_rows_and_padding():
    per_token = torch.arange(12.0).view(3, 4)
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]], dtype=torch.float)
    teacher = torch.tensor([True, False, True])
    assert aggregate_off_policy_loss(per_token, mask, teacher, "sequence").item() == pytest.approx(0.5 + 8.0)
    assert aggregate_off_policy_loss(per_token, mask, teacher, "token").item() == pytest.approx(1.0 + 8.0)
    with pytest.raises(ValueError, match="sequence"):
        aggregate_off_policy_loss(per_token, mask, teacher, "row")


def test_micro_batch_normalizer_matches_trl_dapo_scaling():
    assert micro_batch_normalizer(64.0, 2, 4, 4, training=True) == 32.0
    assert micro_batch_normalizer(64.0, 2, 4, 2, training=True) == 64.0
    assert micro_batch_normalizer(64.0, 4, 4, 4, training=False) == 16.0


# --------------------------------------------------------------------------------------------- trainer-level checks


def _grads(model):
    return {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.grad is not None}


def _loss_and_grads(trainer, batch):
    trainer.model.zero_grad(set_to_none=True)
    trainer.current_gradient_accumulation_steps = 1
    loss = trainer._compute_loss(trainer.model, batch)
    loss.backward()
    return loss.detach(), _grads(trainer.model)


def _assert_same_grads(first, second, atol=1e-6):
    assert first.keys() == second.keys() and first
    for name in first:
        torch.testing.assert_close(first[name], second[name], atol=atol, rtol=1e-5, msg=name)


@pytest.fixture(scope="module")
def grpo_and_ampo(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("loss")
    grpo = make_trainer(tmp, GRPOTrainer)
    ampo = make_trainer(tmp, guidance_trigger="all_fail")
    return grpo, ampo


def test_no_teacher_row_gives_exactly_the_grpo_loss_and_gradients(grpo_and_ampo):  # guarantee (a)
    grpo, ampo = grpo_and_ampo
    batch = generate(grpo, addition_rows(2))
    assert "ampo_is_teacher" not in batch
    grpo_loss, grpo_grads = _loss_and_grads(grpo, batch)
    ampo_loss, ampo_grads = _loss_and_grads(ampo, batch)
    assert ampo_loss.item() == grpo_loss.item()
    _assert_same_grads(grpo_grads, ampo_grads, atol=0)
    # the AMPO code path itself (teacher marks present but all False) also reduces to GRPO
    marked = dict(
        batch, ampo_is_teacher=torch.zeros(8, dtype=torch.bool), ampo_off_policy_normalizer=torch.tensor(8.0)
    )
    marked_loss, marked_grads = _loss_and_grads(ampo, marked)
    assert marked_loss.item() == pytest.approx(grpo_loss.item(), abs=1e-7)
    _assert_same_grads(grpo_grads, marked_grads)


def test_teacher_rows_add_the_shaping_loss_to_grpo_on_the_other_rows(grpo_and_ampo):
    grpo, ampo = grpo_and_ampo
    batch = generate(ampo, addition_rows(2))  # random tiny model: every group fails and is guided
    teacher = batch["ampo_is_teacher"]
    assert teacher.sum() == 4
    ampo_loss, ampo_grads = _loss_and_grads(ampo, batch)

    on_rows = (~teacher).nonzero().flatten()
    on_policy_batch = {
        key: (value[on_rows] if isinstance(value, torch.Tensor) and value.dim() > 0 else value)
        for key, value in batch.items()
        if not key.startswith("ampo_")
    }
    grpo.model.load_state_dict(ampo.model.state_dict())
    grpo_loss, grpo_grads = _loss_and_grads(grpo, on_policy_batch)

    # off-policy part by hand: -A * p/(p+0.1), token-mean per teacher sequence, divided by N_rows = 8
    model = grpo.model
    model.zero_grad(set_to_none=True)
    rows = teacher.nonzero().flatten()
    ids = torch.cat([batch["prompt_ids"][rows], batch["completion_ids"][rows]], 1)
    attention = torch.cat([batch["prompt_mask"][rows], batch["completion_mask"][rows]], 1)
    logps, _, _ = grpo._get_per_token_logps_and_entropies(model, ids, attention, batch["completion_ids"].size(1))
    mask = batch["completion_mask"][rows].float()
    per_token = -batch["advantages"][rows].unsqueeze(1) * logps.exp() / (logps.exp() + 0.1)
    manual_off = ((per_token * mask).sum(1) / mask.sum(1)).sum() / 8.0
    manual_off.backward()
    off_grads = _grads(model)

    assert ampo_loss.item() == pytest.approx(grpo_loss.item() + manual_off.item(), abs=1e-6)
    _assert_same_grads(ampo_grads, {name: grpo_grads[name] + off_grads[name] for name in grpo_grads}, atol=1e-6)


def _accumulated_grads(trainer, batch, order, num_micro_batches):
    trainer.model.zero_grad(set_to_none=True)
    trainer.current_gradient_accumulation_steps = num_micro_batches
    trainer.args.steps_per_generation = num_micro_batches
    size = len(order) // num_micro_batches
    total = 0.0
    for start in range(0, len(order), size):
        rows = torch.tensor(order[start : start + size])
        micro = {
            key: (value[rows] if isinstance(value, torch.Tensor) and value.dim() > 0 else value)
            for key, value in batch.items()
        }
        loss = trainer._compute_loss(trainer.model, micro)
        loss.backward()
        total += loss.item()
    return total, _grads(trainer.model)


@pytest.mark.parametrize(
    "aggregation, loss_type, released_scale",
    [(a, t, False) for a in ("sequence", "token") for t in ("dapo", "grpo", "dr_grpo")]
    + [("constant", "dr_grpo", False), ("constant", "dr_grpo", True)],
)
def test_row_weights_do_not_depend_on_micro_batch_composition(tmp_path, aggregation, loss_type, released_scale):  # (c)
    trainer = make_trainer(
        tmp_path, off_policy_aggregation=aggregation, loss_type=loss_type, released_loss_scale=released_scale
    )
    batch = generate(trainer, addition_rows(2))
    assert batch["ampo_is_teacher"].any()
    teacher_rows = batch["ampo_is_teacher"].nonzero().flatten().tolist()
    other_rows = [r for r in range(8) if r not in teacher_rows]
    # split 1: teachers spread over the two micro-batches; split 2: all teachers in the first micro-batch
    spread = [teacher_rows[0], *other_rows[:3], teacher_rows[1], *teacher_rows[2:], *other_rows[3:]]
    packed = teacher_rows + other_rows
    loss_spread, grads_spread = _accumulated_grads(trainer, batch, spread, 2)
    loss_packed, grads_packed = _accumulated_grads(trainer, batch, packed, 2)
    assert loss_spread == pytest.approx(loss_packed, abs=1e-6)
    _assert_same_grads(grads_spread, grads_packed, atol=1e-6)
    if released_scale:
        return  # the released code's sum scales with the micro-batch size by design: only the split is checked
    # and equal to processing the whole generation batch at once
    loss_whole, grads_whole = _accumulated_grads(trainer, batch, list(range(8)), 1)
    assert loss_whole == pytest.approx(loss_packed, abs=1e-6)
    _assert_same_grads(grads_whole, grads_packed, atol=1e-6)


def test_token_mode_is_one_token_mean_over_all_tokens(tmp_path):
    trainer = make_trainer(tmp_path, off_policy_aggregation="token", loss_type="dapo")
    batch = generate(trainer, addition_rows(2))
    total_tokens = batch["completion_mask"].sum().item()
    assert batch["num_items_in_batch"].item() == total_tokens
    assert batch["ampo_off_policy_normalizer"].item() == total_tokens
    # constant is only valid with dr_grpo (both terms divided by a constant length); its normaliser is rows x L
    constant = make_trainer(tmp_path, off_policy_aggregation="constant", loss_type="dr_grpo")
    batch = generate(constant, addition_rows(2))
    assert batch["ampo_off_policy_normalizer"].item() == 8 * constant.max_completion_length
    sequence = make_trainer(tmp_path, off_policy_aggregation="sequence", loss_type="dapo")
    batch = generate(sequence, addition_rows(2))
    on_policy_tokens = (batch["completion_mask"] * (~batch["ampo_is_teacher"]).unsqueeze(1)).sum().item()
    assert batch["num_items_in_batch"].item() == on_policy_tokens
    assert batch["ampo_off_policy_normalizer"].item() == 8.0


def test_entropy_bonus_and_kl_stay_finite_with_teacher_rows(tmp_path, tiny_model_dir):
    trainer = make_trainer(tmp_path, model_path=tiny_model_dir, beta=0.05, entropy_coef=0.001)
    batch = generate(trainer, addition_rows(2))
    assert torch.isfinite(batch["ref_per_token_logps"]).all()
    teacher = batch["ampo_is_teacher"]
    teacher_mask = batch["completion_mask"][teacher].bool()
    assert (batch["ref_per_token_logps"][teacher][teacher_mask] < 0).all()  # real reference log-probs, not 0
    loss, grads = _loss_and_grads(trainer, copy.copy(batch))
    assert torch.isfinite(loss) and all(torch.isfinite(g).all() for g in grads.values())


def test_generation_batch_feeding_two_optimizer_steps_scales_like_trl(tmp_path):
    """steps_per_generation = 2 x gradient_accumulation_steps: each micro-batch share uses N/P * GA/spg, so the
    four micro-batches of a generation batch add up to twice the whole-batch loss (two optimizer steps)."""
    trainer = make_trainer(tmp_path)
    batch = generate(trainer, addition_rows(2))
    order = list(range(8))
    whole, whole_grads = _accumulated_grads(trainer, batch, order, 1)
    trainer.model.zero_grad(set_to_none=True)
    trainer.current_gradient_accumulation_steps = 2
    trainer.args.steps_per_generation = 4
    total = 0.0
    for start in range(0, 8, 2):
        rows = torch.tensor(order[start : start + 2])
        micro = {k: (v[rows] if isinstance(v, torch.Tensor) and v.dim() > 0 else v) for k, v in batch.items()}
        loss = trainer._compute_loss(trainer.model, micro)
        loss.backward()
        total += loss.item()
    assert total == pytest.approx(2 * whole, abs=1e-6)
    _assert_same_grads({n: 2 * g for n, g in whole_grads.items()}, _grads(trainer.model), atol=1e-6)


def test_entropy_bonus_acts_on_on_policy_tokens_only(tmp_path):
    plain = make_trainer(tmp_path)
    bonus = make_trainer(tmp_path, entropy_coef=0.5)
    batch = generate(plain, addition_rows(2))
    plain_loss, _ = _loss_and_grads(plain, batch)
    bonus_loss, _ = _loss_and_grads(bonus, batch)
    ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], 1)
    attention = torch.cat([batch["prompt_mask"], batch["completion_mask"]], 1)
    with torch.no_grad():
        _, entropies, _ = plain._get_per_token_logps_and_entropies(
            plain.model, ids, attention, batch["completion_ids"].size(1), compute_entropy=True
        )
    on_policy = batch["completion_mask"] * (~batch["ampo_is_teacher"]).unsqueeze(1)
    expected_bonus = 0.5 * (entropies * on_policy).sum() / on_policy.sum()
    assert plain_loss.item() - bonus_loss.item() == pytest.approx(expected_bonus.item(), rel=1e-4)


def test_kl_on_teacher_rows_follows_the_off_policy_aggregation(tmp_path, tiny_model_dir):
    without = make_trainer(tmp_path, model_path=tiny_model_dir)
    with_kl = make_trainer(tmp_path, model_path=tiny_model_dir, beta=0.2)
    batch = generate(with_kl, addition_rows(2))  # carries ref_per_token_logps (equal to the policy's at step 0)
    ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], 1)
    attention = torch.cat([batch["prompt_mask"], batch["completion_mask"]], 1)
    # Make reference and policy differ so the KL is not zero.
    shifted = dict(batch, ref_per_token_logps=batch["ref_per_token_logps"] - 0.3 * batch["completion_mask"])
    loss_without, _ = _loss_and_grads(without, {k: v for k, v in shifted.items() if k != "ref_per_token_logps"})
    loss_with, _ = _loss_and_grads(with_kl, shifted)
    with torch.no_grad():
        logps, _, _ = with_kl._get_per_token_logps_and_entropies(
            with_kl.model, ids, attention, batch["completion_ids"].size(1)
        )
    log_ratio = shifted["ref_per_token_logps"] - logps
    kl = torch.exp(log_ratio) - log_ratio - 1
    mask = batch["completion_mask"].float()
    teacher = batch["ampo_is_teacher"]
    on_mask = mask * (~teacher).unsqueeze(1)
    on_policy_kl = (kl * on_mask).sum() / batch["num_items_in_batch"]  # dapo: over on-policy tokens
    teacher_kl = ((kl * mask).sum(1)[teacher] / mask.sum(1)[teacher]).sum() / 8.0  # sequence mode: 1/N_rows
    assert loss_with.item() - loss_without.item() == pytest.approx(0.2 * (on_policy_kl + teacher_kl).item(), rel=1e-4)


def test_logged_loss_terms_add_up_to_the_optimizer_step_loss(tmp_path):
    trainer = make_trainer(tmp_path)
    batch = generate(trainer, addition_rows(2))
    total, _ = _accumulated_grads(trainer, batch, list(range(8)), 2)
    metrics = trainer._metrics["train"]
    on, off = metrics["ampo/on_policy_loss"][-2:], metrics["ampo/off_policy_loss"][-2:]
    assert (sum(on) + sum(off)) / 2 == pytest.approx(total, abs=1e-6)


def test_constant_mode_with_dr_grpo_is_the_released_code_normalisation(tmp_path):
    """Released code: every token's loss (on- and off-policy) summed and divided by rows x max response length."""
    trainer = make_trainer(tmp_path, off_policy_aggregation="constant", loss_type="dr_grpo")
    batch = generate(trainer, addition_rows(2))
    assert batch["ampo_off_policy_normalizer"].item() == 8 * trainer.max_completion_length
    loss, _ = _loss_and_grads(trainer, batch)
    ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], 1)
    attention = torch.cat([batch["prompt_mask"], batch["completion_mask"]], 1)
    with torch.no_grad():
        logps, _, _ = trainer._get_per_token_logps_and_entropies(
            trainer.model, ids, attention, batch["completion_ids"].size(1)
        )
    advantages = batch["advantages"].unsqueeze(1)
    teacher = batch["ampo_is_teacher"].unsqueeze(1)
    mask = batch["completion_mask"].float()
    on_policy = -advantages * torch.ones_like(logps)  # ratio 1 at the sampling policy: -min(r A, clip(r) A) = -A
    off_policy = -advantages * logps.exp() / (logps.exp() + 0.1)
    per_token = torch.where(teacher, off_policy, on_policy)
    expected = (per_token * mask).sum() / (8 * trainer.max_completion_length)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
