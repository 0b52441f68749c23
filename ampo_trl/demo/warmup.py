"""The demo student's supervised warm-up: the tiny model trained on one teacher's solutions of easy problems (plus a
small share of hard ones), so that, like an instruct model, it solves easy problems and rarely a hard one. Plain
PyTorch, cached on disk by its settings."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .task import TASK_VERSION, TEACHERS, AdditionProblem, DemoTask, prompt_messages

if TYPE_CHECKING:  # pragma: no cover
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

logger = logging.getLogger("ampo_trl.demo")


@dataclass(frozen=True)
class WarmupSettings:
    steps: int = 400
    learning_rate: float = 3e-3
    batch_size: int = 32
    hard_fraction: float = 0.01
    style: str = "column"
    seed: int = 0
    eval_problems: int = 200
    system_prompt: str | None = None

    def key(self) -> str:
        from .tiny import DEFAULT_MODEL_CONFIG

        payload = {"task": TASK_VERSION, "model": DEFAULT_MODEL_CONFIG, **self.__dict__}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]


def encode_pair(
    tokenizer: PreTrainedTokenizerBase, messages: Sequence[dict], text: str
) -> tuple[list[int], list[int]]:
    """Token ids of one supervised example: the chat-templated prompt (generation prompt appended) and the
    completion ``text`` followed by EOS, the format the RL trainer samples and rewards."""
    prompt = tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=False)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    completion_ids = tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return prompt_ids, completion_ids


def collate_supervised(pad_token_id: int, items: Sequence[tuple[list[int], list[int]]]) -> dict:
    """Right-padded ``input_ids`` / ``attention_mask`` / ``labels`` with the loss on completion tokens only (the
    warm-up's batches and the SFT baseline's)."""
    import torch

    length = max(len(p) + len(c) for p, c in items)
    input_ids = torch.full((len(items), length), pad_token_id)
    attention = torch.zeros((len(items), length), dtype=torch.long)
    labels = torch.full((len(items), length), -100)
    for row, (prompt_ids, completion_ids) in enumerate(items):
        ids = prompt_ids + completion_ids
        input_ids[row, : len(ids)] = torch.tensor(ids)
        attention[row, : len(ids)] = 1
        labels[row, len(prompt_ids) : len(ids)] = torch.tensor(completion_ids)
    return {"input_ids": input_ids, "attention_mask": attention, "labels": labels}


def warmup_batches(settings: WarmupSettings) -> Iterator[list[AdditionProblem]]:
    """The problems of each warm-up step, in order: training problems only (``DemoTask``'s leak-free split), hard
    ones with probability ``hard_fraction``."""
    task = DemoTask(eval_problems=settings.eval_problems, seed=settings.seed)
    easy, hard = task.train_easy, task.train_hard
    rng = random.Random(f"warmup-{settings.seed}")
    for _ in range(settings.steps):
        yield [
            rng.choice(hard) if rng.random() < settings.hard_fraction else rng.choice(easy)
            for _ in range(settings.batch_size)
        ]


def supervised_warmup(
    settings: WarmupSettings, log_every: int = 50
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Train the tiny model on teacher solutions of easy problems (plus ``hard_fraction`` hard ones).

    Plain PyTorch: AdamW, linear warm-up and decay, loss on completion tokens only. Returns ``(model, tokenizer)``.
    """
    import torch

    from .tiny import build_tiny_model_and_tokenizer

    if settings.style not in TEACHERS:
        raise ValueError(f"demo warm-up style must be one of {list(TEACHERS)}, got {settings.style!r}.")
    model, tokenizer = build_tiny_model_and_tokenizer(seed=settings.seed)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.learning_rate, weight_decay=0.0)
    warmup = max(1, settings.steps // 20)

    def schedule(step):
        return min(1.0, (step + 1) / warmup) * max(0.0, 1.0 - step / settings.steps)

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    teacher = TEACHERS[settings.style]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        for step, problems in enumerate(warmup_batches(settings)):
            items = [
                encode_pair(tokenizer, prompt_messages(problem, settings.system_prompt), teacher(problem))
                for problem in problems
            ]
            loss = model(**collate_supervised(tokenizer.pad_token_id, items)).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            if log_every and (step % log_every == 0 or step == settings.steps - 1):
                logger.info("demo warm-up step %d/%d: loss %.4f", step + 1, settings.steps, loss.item())
    model.eval()
    return model, tokenizer


def warmup_path(settings: WarmupSettings, cache_dir: str | os.PathLike | None = None) -> Path:
    """Where the warmed-up student for ``settings`` lives: ``<cache>/demo-student-<settings.key()>``."""
    from .tiny import default_cache_dir

    return Path(cache_dir or default_cache_dir()) / f"demo-student-{settings.key()}"


def is_cached(path: Path) -> bool:
    return (path / "config.json").exists() and (path / "tokenizer_config.json").exists()


def warmed_up_model_path(settings: WarmupSettings, cache_dir: str | os.PathLike | None = None) -> tuple[Path, bool]:
    """Directory of the warmed-up student for ``settings`` (built on first use). Returns ``(path, was_cached)``."""
    path = warmup_path(settings, cache_dir)
    if is_cached(path):
        return path, True
    started = time.time()
    model, tokenizer = supervised_warmup(settings)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / "demo_warmup.json").write_text(
        json.dumps({**settings.__dict__, "seconds": round(time.time() - started, 1)}, indent=2)
    )
    try:
        os.replace(tmp, path)
    except OSError:  # another process finished first: keep its copy
        shutil.rmtree(tmp, ignore_errors=True)
    return path, False


def _warmup_once(settings: WarmupSettings):
    """Warm up on the main process first (other processes then load the cached result)."""
    from accelerate import PartialState

    state = PartialState()
    with state.main_process_first():
        return warmed_up_model_path(settings)
