"""Helpers shared by the trainer tests: deterministic rewards, datasets with pools, trainer factories."""

import os
import re
from pathlib import Path

import torch
from datasets import Dataset
from trl import GRPOConfig

from ampo_trl import AMPOConfig, AMPOTrainer
from ampo_trl.demo.tiny import build_tiny_model_and_tokenizer


def exact_answer_reward(completions, answer, **kwargs):
    """1.0 iff the last <answer>...</answer> equals the gold string (fast, deterministic test reward)."""
    rewards = []
    for completion, gold in zip(completions, answer):
        text = completion[0]["content"] if isinstance(completion, list) else completion
        found = re.findall(r"<answer>(.*?)</answer>", text, flags=re.S)
        rewards.append(1.0 if found and found[-1].strip() == str(gold).strip() else 0.0)
    return rewards


def always_correct_reward(completions, **kwargs):
    return [1.0] * len(completions)


def scripted_correctness_reward(completions, answer, policy_rewards, **kwargs):
    """A controllable correctness reward for trainer tests with mixed groups.

    A completion that holds its gold answer in tags (a teacher row: the random tiny model never writes one) gets
    1.0. A sampled completion gets `policy_rewards[offset]` of its prompt (a list of num_generations values, see
    `scripted_rows`), offset being its position in its group: on one process the generation batch holds whole
    groups of consecutive rows, so offset = row index % num_generations.
    """
    rewards = []
    for index, (completion, gold, scripted) in enumerate(zip(completions, answer, policy_rewards)):
        text = completion[0]["content"] if isinstance(completion, list) else completion
        if f"<answer>{gold}</answer>" in text:
            rewards.append(1.0)
        else:
            rewards.append(float(scripted[index % len(scripted)]))
    return rewards


TEACHER_STYLES = ("terse", "steps", "verbose", "check", "digits")


def scripted_rows(patterns, pool_size=3, first_operand=11):
    """One prompt per pattern: `policy_rewards` = the pattern (the reward of each sampled completion of its group,
    by offset, for `scripted_correctness_reward`), a pool of `pool_size` correct teacher solutions (at most 5)."""
    rows = []
    for i, pattern in enumerate(patterns):
        a, b = first_operand + i, 40 + 3 * i
        total = a + b
        texts = {
            "terse": f"<answer>{total}</answer>",
            "steps": f"{a} plus {b} makes {total}. <answer>{total}</answer>",
            "verbose": f"Add {a} and {b}. First {a}, then {b} more: {total}. <answer>{total}</answer>",
            "check": f"Check: {total}-{b} = {a}. <answer>{total}</answer>",
            "digits": f"Units then tens gives {total}. <answer>{total}</answer>",
        }
        rows.append(
            {
                "prompt": [{"role": "user", "content": f"What is {a}+{b}?"}],
                "answer": str(total),
                "policy_rewards": [float(x) for x in pattern],
                "teacher_solutions": [{"teacher": t, "text": texts[t]} for t in TEACHER_STYLES[:pool_size]],
            }
        )
    return rows


def addition_rows(num_rows=8, conversational=True, pool=True):
    rows = []
    for i in range(num_rows):
        a, b = i + 1, 2 * i + 3
        question = f"What is {a}+{b}?"
        row = {
            "prompt": [{"role": "user", "content": question}] if conversational else question + "\n",
            "answer": str(a + b),
        }
        if pool:
            row["teacher_solutions"] = [
                {"teacher": "terse", "text": f"<answer>{a + b}</answer>"},
                {"teacher": "steps", "text": f"{a} plus {b} makes {a + b}. <answer>{a + b}</answer>"},
                {
                    "teacher": "verbose",
                    "text": f"Add {a} and {b}. First {a}, then {b} more: {a + b}. <answer>{a + b}</answer>",
                },
            ]
        rows.append(row)
    return rows


def make_trainer(
    tmp_path,
    trainer_class=AMPOTrainer,
    rows=None,
    reward_funcs=None,
    model_seed=0,
    model_path=None,
    peft_config=None,
    **config_overrides,
):
    """A trainer on the tiny in-memory model (fast to build), or on a saved one when `model_path` is given
    (needed for beta > 0, where TRL loads the reference model from the path)."""
    is_ampo = issubclass(trainer_class, AMPOTrainer)
    config_class = AMPOConfig if is_ampo else GRPOConfig
    settings = dict(
        output_dir=str(tmp_path / trainer_class.__name__),
        per_device_train_batch_size=8,
        num_generations=4,
        max_completion_length=16,
        report_to="none",
        use_cpu=True,
        bf16=False,
        seed=0,
        save_strategy="no",
        logging_steps=1,
        gradient_checkpointing=False,
        learning_rate=1e-3,
    )
    if is_ampo:
        settings["max_teacher_length"] = 96  # teacher rows wider than sampled completions: exercises re-padding
    settings.update(config_overrides)
    if model_path is not None:
        from transformers import AutoTokenizer

        model, tokenizer = model_path, AutoTokenizer.from_pretrained(model_path)
    else:
        model, tokenizer = build_tiny_model_and_tokenizer(seed=model_seed)
    return trainer_class(
        model=model,
        reward_funcs=reward_funcs or [exact_answer_reward],
        args=config_class(**settings),
        train_dataset=Dataset.from_list(rows if rows is not None else addition_rows(8)),
        processing_class=tokenizer,
        peft_config=peft_config,
    )


def generation_inputs(trainer, rows):
    """The local generation batch the sampler would give: each row repeated num_generations times."""
    return [dict(row) for row in rows for _ in range(trainer.num_generations)]


def generate(trainer, rows, seed=0):
    trainer.model.train()
    torch.manual_seed(seed)
    return trainer._generate_and_score_completions(generation_inputs(trainer, rows))


def teacher_offsets(batch, num_generations):
    """Per group, the offsets (positions within the group) of the rows that hold a teacher solution."""
    teacher = batch["ampo_is_teacher"].view(-1, num_generations) if "ampo_is_teacher" in batch else None
    num_groups = batch["advantages"].numel() // num_generations
    if teacher is None:
        return [[] for _ in range(num_groups)]
    return [row.nonzero().flatten().tolist() for row in teacher]


def decisions(trainer):
    """The guidance decisions of the latest generation batch as comparable tuples (row, teacher)."""
    return [(g["row"], g["teacher"]) for g in trainer.last_guidance]


@torch.no_grad()
def hand_gold_logps(model, tokenizer, prompt, teacher_text, gold):
    """The comprehension log-probs computed by hand: one plain forward of chat-templated prompt + the teacher text
    cut before its last <answer> + "<answer>" + gold + "</answer>" + EOS; the log-probs of the gold tokens."""
    prompt_ids = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True, return_dict=True)[
        "input_ids"
    ]
    head = list(prompt_ids) + tokenizer(teacher_text[: teacher_text.rfind("<answer>")] + "<answer>")["input_ids"]
    gold_ids = tokenizer(gold)["input_ids"]
    ids = torch.tensor([head + gold_ids + tokenizer("</answer>")["input_ids"] + [tokenizer.eos_token_id]])
    logps = torch.log_softmax(model(input_ids=ids).logits[0].float(), dim=-1)
    return torch.stack([logps[len(head) + i - 1, token] for i, token in enumerate(gold_ids)])


def shared_benchmark_dir() -> Path:
    """The public evaluation sets (read-only, outside the repository): $AMPO_BENCHMARK_DIR, else
    ../shared/data/benchmarks next to the checkout. `.ci/run` sets the variable on CI."""
    default = Path(__file__).resolve().parents[2] / "shared" / "data" / "benchmarks"
    return Path(os.environ.get("AMPO_BENCHMARK_DIR") or default)
