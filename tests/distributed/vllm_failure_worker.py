"""Launched by tests/test_vllm_scoring.py under `torchrun --nproc_per_node 2`: comprehension scoring on a vLLM server
(stand-in) that fails. Only the main process talks to the server; every rank must stop with the same error instead of
waiting in a collective. Each rank writes the error it raised to `rank<r>.error`."""

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: helpers and the vLLM stand-in

import pytest  # noqa: E402
import vllm_stand_in  # noqa: E402
from datasets import Dataset  # noqa: E402
from helpers import addition_rows, exact_answer_reward  # noqa: E402

from ampo_trl import AMPOConfig, AMPOTrainer  # noqa: E402
from ampo_trl.demo.tiny import build_tiny_model_and_tokenizer  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--output-dir", required=True)
    args = parser.parse_args()
    with pytest.MonkeyPatch.context() as monkeypatch:
        stand_in = vllm_stand_in.install(monkeypatch)
        model, tokenizer = build_tiny_model_and_tokenizer(seed=0)
        config = AMPOConfig(
            output_dir=args.output_dir,
            per_device_train_batch_size=4,
            num_generations=4,
            max_completion_length=8,
            max_teacher_length=96,
            max_steps=1,
            use_vllm=True,
            vllm_mode="server",
            comprehension_backend="vllm",
            num_replacements=1,
            report_to="none",
            save_strategy="no",
            use_cpu=True,
            bf16=False,
            gradient_checkpointing=False,
        )
        trainer = AMPOTrainer(
            model=model,
            reward_funcs=[exact_answer_reward],
            args=config,
            train_dataset=Dataset.from_list(addition_rows(4)),
            processing_class=tokenizer,
        )
        rank = trainer.accelerator.process_index
        for engine in stand_in.instances:
            if hasattr(engine, "vllm_client"):
                engine.vllm_client.fail_with = "500, Internal Server Error"
        started = time.monotonic()
        try:
            trainer.train()
        except RuntimeError as error:
            Path(args.output_dir, f"rank{rank}.error").write_text(f"{time.monotonic() - started:.1f}\n{error}")
            raise


if __name__ == "__main__":
    main()
