"""A drop-in replacement: the GRPO quick start of TRL's documentation, run unchanged with `AMPOTrainer` swapped in for
`GRPOTrainer`, trains exactly as GRPO (its dataset has no teacher pool) and logs the same losses.

TRL's example (docs: GRPO Trainer, quick start), with the hub model and dataset replaced by offline stand-ins::

    dataset = load_dataset("trl-lib/tldr", split="train")

    def reward_len(completions, **kwargs):
        return [-abs(20 - len(completion)) for completion in completions]

    training_args = GRPOConfig(output_dir="Qwen2-0.5B-GRPO")
    trainer = GRPOTrainer(model="Qwen/Qwen2-0.5B-Instruct", reward_funcs=reward_len, args=training_args,
                          train_dataset=dataset)
    trainer.train()
"""

import pytest
from datasets import Dataset
from trl import GRPOConfig, GRPOTrainer

from ampo_trl import AMPOTrainer


def reward_len(completions, **kwargs):
    return [-abs(20 - len(completion)) for completion in completions]


def tldr_like_dataset():
    posts = [f"SUBREDDIT: r/test\nPOST: story number {i} about a cat and a dog.\nTL;DR:" for i in range(16)]
    return Dataset.from_dict({"prompt": posts, "completion": [" a short summary"] * len(posts)})


def quick_start(trainer_class, model_dir, output_dir):
    # The example's objects, with only the run length and the offline CPU settings added.
    training_args = GRPOConfig(
        output_dir=str(output_dir),
        max_steps=3,
        per_device_train_batch_size=4,
        num_generations=4,
        max_completion_length=12,
        logging_steps=1,
        report_to="none",
        use_cpu=True,
        bf16=False,
        save_strategy="no",
        seed=0,
    )
    trainer = trainer_class(
        model=model_dir, reward_funcs=reward_len, args=training_args, train_dataset=tldr_like_dataset()
    )
    trainer.train()
    return trainer


def test_trls_grpo_quick_start_runs_unchanged_and_logs_the_same_losses(tiny_model_dir, tmp_path, caplog):
    grpo = quick_start(GRPOTrainer, tiny_model_dir, tmp_path / "grpo")
    with caplog.at_level("WARNING"):
        ampo = quick_start(AMPOTrainer, tiny_model_dir, tmp_path / "ampo")
    assert "AMPO guidance is inactive" in caplog.text

    def logged(trainer, key):
        return [entry[key] for entry in trainer.state.log_history if key in entry]

    assert len(logged(grpo, "loss")) == 3
    for key in ("loss", "reward", "completions/mean_length", "grad_norm"):
        assert logged(ampo, key) == pytest.approx(logged(grpo, key), rel=1e-6, abs=1e-9), key
    assert not any(key.startswith("ampo/") for entry in ampo.state.log_history for key in entry)
