"""Paths used at scale, on one CPU process: vLLM (server and colocate, with a stand-in engine; comprehension scoring
on vLLM is in test_vllm_scoring.py), gradient
accumulation with steps_per_generation and num_iterations, PEFT/LoRA with a reference model, exact resume."""

import json

import pytest
import torch
import vllm_stand_in
from helpers import addition_rows, generate, make_trainer
from peft import LoraConfig
from transformers import TrainerCallback

from ampo_trl import AMPOTrainer

# --------------------------------------------------------------------------------------------- vLLM stand-in


@pytest.fixture
def fake_vllm(monkeypatch):
    return vllm_stand_in.install(monkeypatch)  # follows vLLM's semantics: see tests/vllm_stand_in.py


@pytest.mark.parametrize("vllm_mode", ["server", "colocate"])
def test_vllm_teacher_rows_are_excluded_from_importance_sampling(tmp_path, fake_vllm, vllm_mode):
    trainer = make_trainer(
        tmp_path,
        use_vllm=True,
        vllm_mode=vllm_mode,
        vllm_importance_sampling_mode="token_truncate",
        vllm_importance_sampling_clip_max=3.0,
        off_policy_mask_threshold=0.5,
    )
    batch = generate(trainer, addition_rows(2))
    teacher, mask = batch["ampo_is_teacher"], batch["completion_mask"].bool()
    assert teacher.sum() == 4
    ratio = batch["importance_sampling_ratio"]
    assert (ratio[teacher] == 1.0).all()
    on_policy_ratios = ratio[~teacher][mask[~teacher]]
    assert on_policy_ratios.numel() > 0
    torch.testing.assert_close(on_policy_ratios, torch.full_like(on_policy_ratios, 0.05).exp(), atol=1e-4, rtol=0)
    assert (batch["sampling_per_token_logps"][teacher] == 0).all()  # ignored placeholders
    trainer.current_gradient_accumulation_steps = 1
    loss = trainer._compute_loss(trainer.model, batch)
    loss.backward()
    assert torch.isfinite(loss)
    assert trainer._metrics["train"]["ampo/off_policy/prob_mean"][-1] > 0


def test_vllm_scoring_requires_vllm(tmp_path):
    with pytest.raises(ValueError, match="needs use_vllm=True"):
        make_trainer(tmp_path, comprehension_backend="vllm")


def test_vllm_sequence_level_correction_gives_teacher_rows_ratio_one(tmp_path, fake_vllm):
    trainer = make_trainer(
        tmp_path,
        use_vllm=True,
        vllm_mode="server",
        vllm_importance_sampling_mode="sequence_truncate",
        vllm_importance_sampling_clip_max=3.0,
    )
    batch = generate(trainer, addition_rows(2))
    teacher, ratio = batch["ampo_is_teacher"], batch["importance_sampling_ratio"]
    assert teacher.sum() == 4 and ratio.shape == (8, 1)  # one ratio per sequence, not widened with the rows
    assert (ratio[teacher] == 1.0).all()
    # sampled rows: exp(sum of the 0.05 per-token log-ratio of the stand-in sampler)
    lengths = batch["completion_mask"][~teacher].sum(1, keepdim=True).float()
    torch.testing.assert_close(ratio[~teacher], (0.05 * lengths).exp(), atol=1e-4, rtol=0)
    trainer.current_gradient_accumulation_steps = 1
    assert torch.isfinite(trainer._compute_loss(trainer.model, batch))


# ----------------------------------------------------------------------- accumulation, steps_per_generation, reuse


def test_marks_survive_shuffle_and_split_with_accumulation_and_iterations(tmp_path):
    trainer = make_trainer(
        tmp_path,
        per_device_train_batch_size=4,
        gradient_accumulation_steps=2,
        steps_per_generation=4,
        num_iterations=2,
        max_steps=2,
    )
    trainer.train()
    buffered = trainer._buffered_inputs
    assert len(buffered) == 4
    teacher_rows = sum(int(micro["ampo_is_teacher"].sum()) for micro in buffered)
    assert teacher_rows == len(trainer.last_guidance) > 0
    for micro in buffered:
        assert micro["ampo_is_teacher"].shape == (4,)
        assert micro["ampo_off_policy_normalizer"].item() == 16.0  # global rows of the generation batch
        assert "old_per_token_logps" in micro  # num_iterations > 1: ratios against the sampling policy
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logs) == 2 and all(torch.isfinite(torch.tensor(entry["loss"])) for entry in logs)


# ------------------------------------------------------------------------------------------------------- PEFT


@torch.no_grad()
def _teacher_logps(model, batch, row):
    length = int(batch["completion_mask"][row].sum())
    ids = torch.cat([batch["prompt_ids"][row], batch["completion_ids"][row, :length]]).unsqueeze(0)
    logits = model(input_ids=ids).logits[0].float()
    prompt_length = batch["prompt_ids"].size(1)
    logps = logits.log_softmax(-1)
    return torch.stack([logps[prompt_length + i - 1, ids[0, prompt_length + i]] for i in range(length)])


def test_peft_scores_with_the_adapter_and_references_without_it(tmp_path):
    trainer = make_trainer(
        tmp_path,
        beta=0.1,
        num_replacements=1,
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"),
    )
    model = trainer.model
    with torch.no_grad():  # a non-trivial adapter, so "with" and "without" differ
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.5, generator=torch.Generator().manual_seed(1))
    batch = generate(trainer, addition_rows(2))
    row = int(batch["ampo_is_teacher"].nonzero()[0])
    length = int(batch["completion_mask"][row].sum())
    with model.disable_adapter():
        base = _teacher_logps(model, batch, row)
    adapted = _teacher_logps(model, batch, row)
    assert not torch.allclose(base, adapted, atol=1e-3)
    torch.testing.assert_close(batch["ref_per_token_logps"][row, :length], base, atol=1e-4, rtol=1e-4)
    trainer.current_gradient_accumulation_steps = 1
    loss = trainer._compute_loss(model, batch)
    loss.backward()
    lora_grads = [p.grad for n, p in model.named_parameters() if "lora" in n and p.grad is not None]
    assert lora_grads and any(g.abs().sum() > 0 for g in lora_grads)
    assert all(p.grad is None for n, p in model.named_parameters() if "lora" not in n)


# ------------------------------------------------------------------------------------------------------ resume


class RecordingTrainer(AMPOTrainer):
    def _generate_and_score_completions(self, inputs):
        output = super()._generate_and_score_completions(inputs)
        self.decisions = getattr(self, "decisions", [])
        self.decisions.append({"step": self.state.global_step, "guidance": self.last_guidance})
        return output


class StopAfter(TrainerCallback):
    """Simulates an interruption: the run is planned for max_steps but stops early (after its checkpoint)."""

    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True


def test_resume_gives_the_same_decisions_and_parameters(tmp_path):
    settings = dict(max_steps=4, save_strategy="steps", save_steps=2, learning_rate=3e-3)
    full = make_trainer(tmp_path / "full", trainer_class=RecordingTrainer, **settings)
    full.train()
    interrupted = make_trainer(tmp_path / "resumed", trainer_class=RecordingTrainer, **settings)
    interrupted.add_callback(StopAfter(2))
    interrupted.train()
    resumed = make_trainer(tmp_path / "resumed", trainer_class=RecordingTrainer, **settings)
    resumed.train(resume_from_checkpoint=str(tmp_path / "resumed" / "RecordingTrainer" / "checkpoint-2"))
    assert json.dumps(resumed.decisions) == json.dumps(full.decisions[2:])
    assert json.dumps(interrupted.decisions) == json.dumps(full.decisions[:2])
    for (name, expected), actual in zip(full.model.named_parameters(), resumed.model.parameters()):
        torch.testing.assert_close(actual, expected, atol=0, rtol=0, msg=name)
