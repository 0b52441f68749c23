"""Training run launched by tests/test_distributed.py through tests/launcher.py (1 or 2 CPU processes, DDP or
ZeRO-3).

Writes, for every rank, the guidance decisions and the number of scoring forward passes of every generation batch
(`rank<r>.json`), and saves the final model (or LoRA adapter) from the main process, so the test can check that all
ranks decided the same and that the result matches a single-process run on the same data. Generation is greedy and
prompts have equal length (no padding), so runs with different process counts sample exactly the same completions.

Datasets (`--dataset`):
* ``mixed``: 12 prompts, a third solved by every completion, pools of 1 to 4 solutions (uneven candidate counts
  across processes);
* ``one_candidate``: 3 prompts (every generation batch holds all three), two solved; the unsolved one has a pool of
  two solutions of which only one has an <answer> tag, so each batch has exactly one scorable candidate and one
  of the two processes has no scoring chunk (it must still run a dummy forward: under ZeRO-3 a forward is a
  collective). With --num-replacements 1 that group also puts its single teacher row on one process only, so with
  --beta > 0 the other process runs a dummy reference forward. Run it with --unverified-teachers: the untagged
  solution fails the reward, so verification would drop it and leave a single candidate, which needs no scoring.
"""

import argparse
import json
import os
from pathlib import Path

import torch
from datasets import Dataset

from ampo_trl import AMPOConfig, AMPOTrainer
from ampo_trl.demo.tiny import build_tiny_model_and_tokenizer


def solved_reward(completions, solved, answer, **kwargs):
    """Deterministic outcome per prompt: groups of 'solved' prompts are all correct, the others fail unless the text
    holds the right answer (only teacher rows do: the random tiny model never writes it)."""
    texts = [completion[0]["content"] for completion in completions]
    return [
        1.0 if flag or f"<answer>{gold}</answer>" in text else 0.0 for flag, gold, text in zip(solved, answer, texts)
    ]


def rows(num_rows=12):
    """The ``mixed`` dataset."""
    data = []
    for i in range(num_rows):
        a, b = 10 + i, 40 + 3 * i  # two-digit operands: every prompt has the same token length
        answer = str(a + b)
        styles = [
            ("terse", f"<answer>{answer}</answer>"),
            ("steps", f"{a} and {b} make {answer}. <answer>{answer}</answer>"),
            ("verbose", f"Tens first, then units: {a}+{b} = {answer}. <answer>{answer}</answer>"),
            ("check", f"Check: {answer}-{b} = {a}. <answer>{answer}</answer>"),
        ]
        pool_size = 1 + (i * 7) % 4  # pools of 1..4 solutions: uneven candidate counts across processes
        data.append(
            {
                "prompt": [{"role": "user", "content": f"Add {a} and {b}."}],
                "answer": answer,
                "solved": i % 3 == 0,
                "teacher_solutions": [{"teacher": t, "text": x} for t, x in styles[:pool_size]],
            }
        )
    return data


def one_candidate_rows():
    """The ``one_candidate`` dataset: one unsolved prompt whose pool has one scorable solution (see module doc)."""
    data = []
    for i in range(3):
        a, b = 21 + i, 53 + 2 * i
        answer = str(a + b)
        data.append(
            {
                "prompt": [{"role": "user", "content": f"Add {a} and {b}."}],
                "answer": answer,
                "solved": i != 1,
                "teacher_solutions": [
                    {"teacher": "tagged", "text": f"{a} and {b} make {answer}. <answer>{answer}</answer>"},
                    {"teacher": "untagged", "text": f"{a} and {b} make {answer}."},  # no tag: not scorable
                ],
            }
        )
    return data


DATASETS = {"mixed": rows, "one_candidate": one_candidate_rows}


class RecordingTrainer(AMPOTrainer):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.decision_log = []

    def _generate_and_score_completions(self, inputs):
        output = super()._generate_and_score_completions(inputs)
        if self.model.training:
            self.decision_log.append(
                {
                    "step": self.state.global_step,
                    "guidance": self.last_guidance,
                    # forward passes this rank ran for comprehension scoring (dummy passes included)
                    "scoring_forwards": self._metrics["train"]["ampo/scoring_forwards"][-1],
                }
            )
        return output


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--backend", choices=["ddp", "zero3"], default="ddp")
    parser.add_argument("--per-device-batch", type=int, default=2)
    parser.add_argument("--grad-accum", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--trigger", default="all_fail")
    parser.add_argument("--num-replacements", type=int, default=2)
    parser.add_argument("--aggregation", default="sequence", help="off_policy_aggregation")
    parser.add_argument("--loss-type", default="dapo")
    parser.add_argument("--dataset", choices=sorted(DATASETS), default="mixed")
    parser.add_argument(
        "--beta", type=float, default=0.0, help="> 0 adds a reference model (forwards on teacher rows)"
    )
    parser.add_argument("--model-path", default=None, help="saved tiny model (beta > 0 without --lora)")
    parser.add_argument("--lora", action="store_true", help="train a LoRA adapter (reference = adapter disabled)")
    parser.add_argument("--length-grouping", default="guided", help="AMPOConfig.length_grouping")
    parser.add_argument(
        "--unverified-teachers", action="store_true", help="require_verified_teachers=False (keep rejected solutions)"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)

    deepspeed = None
    if args.backend == "zero3":
        deepspeed = {
            "zero_optimization": {"stage": 3, "stage3_gather_16bit_weights_on_model_save": True},
            "train_micro_batch_size_per_gpu": "auto",
            "gradient_accumulation_steps": "auto",
            "train_batch_size": "auto",
            "gradient_clipping": "auto",
        }
    if args.model_path:
        from transformers import AutoTokenizer

        model, tokenizer = args.model_path, AutoTokenizer.from_pretrained(args.model_path)
    else:
        model, tokenizer = build_tiny_model_and_tokenizer(seed=0)
    config = AMPOConfig(
        output_dir=args.output_dir,
        per_device_train_batch_size=args.per_device_batch,
        gradient_accumulation_steps=args.grad_accum,
        num_generations=4,
        max_completion_length=12,
        max_teacher_length=64,
        max_steps=args.steps,
        learning_rate=1e-3,
        guidance_trigger=args.trigger,
        length_grouping=args.length_grouping,
        num_replacements=args.num_replacements,
        off_policy_aggregation=args.aggregation,
        loss_type=args.loss_type,
        beta=args.beta,
        require_verified_teachers=not args.unverified_teachers,
        generation_kwargs={"do_sample": False},
        report_to="none",
        save_strategy="no",
        logging_steps=1,
        use_cpu=True,
        bf16=False,
        gradient_checkpointing=False,
        seed=0,
        deepspeed=deepspeed,
    )
    peft_config = None
    if args.lora:
        from peft import LoraConfig

        peft_config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    trainer = RecordingTrainer(
        model=model,
        peft_config=peft_config,
        reward_funcs=[solved_reward],
        args=config,
        train_dataset=Dataset.from_list(DATASETS[args.dataset]()),
        processing_class=tokenizer,
    )
    trainer.train()
    rank = trainer.accelerator.process_index
    Path(args.output_dir, f"rank{rank}.json").write_text(
        json.dumps({"decisions": trainer.decision_log, "world_size": trainer.accelerator.num_processes})
    )
    trainer.save_model(os.path.join(args.output_dir, "model"))


if __name__ == "__main__":
    main()
