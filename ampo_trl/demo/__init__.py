"""The embedded CPU demo: a tiny student, an easy/hard addition task, three synthetic teachers.

What it reproduces, in miniature, is the paper's setting: an instruct student that solves easy problems and fails
hard ones, a pool of verified solutions written by several teachers with different styles, and RL on a mix of both.

* **Task** (`task`): ``a+b`` with two-digit ``a`` and ``b``; easy (sum < 100) and hard (sum >= 100) problems, a
  deterministic held-out split that is leak-free by operand pair, one solution per teacher in each pool, and the
  exact-answer reward.
* **Student** (`tiny`, `warmup`): the offline tiny model after a short supervised warm-up (plain PyTorch, cached on
  disk, well under a minute) on *easy* problems written in one style (``column`` by default), with a small share of
  hard ones (``warmup_hard_fraction``, 1% by default) so that, like an instruct model, it has a weak prior on them.
* **RL** (`run`): `AMPOTrainer` on a mix of easy and hard training prompts. Hard problems usually fail for all G
  samples; GRPO gets no gradient from such groups, AMPO replaces failed rows with teacher solutions.

`run.prepare` builds all of this for the train script (``demo: true`` in the recipe); `run.DemoRun` measures
held-out accuracy before and after (`heldout`: greedy accuracy and pass@k through the shared generation backend),
prints the summary and writes ``demo_summary.json`` and the plot. `sft` is the SFT-on-the-pool baseline
(``demo_sft: true``); `sweep` and `sweep_report` run recipes x seeds in parallel and write the tables
(``scripts/demo_sweep.py``).
"""

from .task import TEACHERS, AdditionProblem, DemoTask, exact_answer_reward, train_rows
from .warmup import WarmupSettings

__all__ = ["TEACHERS", "AdditionProblem", "DemoTask", "WarmupSettings", "exact_answer_reward", "train_rows"]
