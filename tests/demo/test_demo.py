"""The embedded CPU demo: task, teachers, cached warm-up, evaluation, summary, plot, and a short run of both demo
recipes through scripts/train.py's entry point."""

import json
from pathlib import Path

import pytest

from ampo_trl.demo import run as demo_run
from ampo_trl.demo import task as demo_task
from ampo_trl.demo import warmup as demo_warmup
from ampo_trl.demo.task import AdditionProblem as Problem
from ampo_trl.demo.task import DemoTask, exact_answer_reward
from ampo_trl.demo.warmup import WarmupSettings
from ampo_trl.rewards import format_reward

REPO = Path(__file__).resolve().parents[2]


def test_task_split_is_deterministic_disjoint_and_labelled():
    task = DemoTask(eval_problems=50, seed=3)
    again = DemoTask(eval_problems=50, seed=3)
    assert task.eval_hard == again.eval_hard and task.train_easy == again.train_easy
    assert DemoTask(eval_problems=50, seed=4).eval_hard != task.eval_hard
    for train, held_out, hard in ((task.train_easy, task.eval_easy, False), (task.train_hard, task.eval_hard, True)):
        assert len(held_out) == 50 and not set(train) & set(held_out)
        assert all(p.hard == hard for p in train + held_out)
    assert len(task.train_easy) + len(task.eval_easy) == 3240  # sums below 100
    assert len(task.train_hard) + len(task.eval_hard) == 8100 - 3240
    assert Problem(37, 25).hard is False and Problem(57, 48).hard is True


def test_teachers_are_correct_formatted_and_distinct():
    problems = [Problem(a, b) for a in range(10, 100, 7) for b in range(10, 100, 9)]
    for name, teacher in demo_task.TEACHERS.items():
        texts = [teacher(p) for p in problems]
        assert exact_answer_reward(texts, [p.answer for p in problems]) == [1.0] * len(problems), name
        assert format_reward(texts) == [1.0] * len(problems), name
    assert demo_task.column_solution(Problem(37, 25)) == "7+5=12, carry 1. 3+2+1=6. <answer>62</answer>"
    assert demo_task.column_solution(Problem(41, 52)) == "1+2=3. 4+5=9. <answer>93</answer>"
    assert demo_task.tens_first_solution(Problem(95, 47)) == "90+40=130, 5+7=12, 130+12=142. <answer>142</answer>"
    assert demo_task.terse_solution(Problem(95, 47)) == "<answer>142</answer>"


def test_exact_answer_reward():
    completions = ["x <answer>12</answer>", [{"role": "assistant", "content": "<answer> 7 </answer>"}], "12", ""]
    assert exact_answer_reward(completions, ["12", "7", "12", "1"]) == [1.0, 1.0, 0.0, 0.0]


def test_train_rows_are_a_valid_pool_dataset():
    from ampo_trl.pool import validate_pool_dataset

    rows = demo_task.train_rows(DemoTask(eval_problems=20), num_prompts=400, hard_fraction=0.5, seed=1)
    report = validate_pool_dataset(rows)
    assert report.ok, report.summary()
    hard = sum(row["difficulty"] == "hard" for row in rows)
    assert 160 < hard < 240
    assert [entry["teacher"] for entry in rows[0]["teacher_solutions"]] == ["column", "tens_first", "terse"]
    held_out = {p.question for p in DemoTask(eval_problems=20).eval_hard + DemoTask(eval_problems=20).eval_easy}
    assert not {row["prompt"][-1]["content"] for row in rows} & held_out


def test_warmup_is_cached_by_settings(tmp_path):
    settings = WarmupSettings(steps=3, batch_size=8, eval_problems=20)
    path, cached = demo_warmup.warmed_up_model_path(settings, cache_dir=tmp_path)
    assert not cached and (path / "config.json").is_file() and (path / "demo_warmup.json").is_file()
    again, cached = demo_warmup.warmed_up_model_path(settings, cache_dir=tmp_path)
    assert cached and again == path
    other, cached = demo_warmup.warmed_up_model_path(WarmupSettings(steps=4, batch_size=8, eval_problems=20), tmp_path)
    assert not cached and other != path


def _solution_nll(model, tokenizer, problems):
    import torch

    total, count = 0.0, 0
    for problem in problems:
        prompt_ids, completion_ids = demo_warmup._encode(tokenizer, problem, demo_task.column_solution(problem), None)
        ids = torch.tensor([prompt_ids + completion_ids])
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0, len(prompt_ids) - 1 : -1]
        total += torch.nn.functional.cross_entropy(logits, torch.tensor(completion_ids), reduction="sum").item()
        count += len(completion_ids)
    return total / count


def test_warmup_learns_the_student_style():
    """The supervised warm-up lowers the loss of column-style solutions (the demo's real warm-up, 200 steps at
    batch 64, reaches ~100% on held-out easy problems; see docs/demo.md)."""
    from ampo_trl.demo.tiny import build_tiny_model_and_tokenizer

    problems = DemoTask(eval_problems=20).eval_easy[:8]
    untrained, tokenizer = build_tiny_model_and_tokenizer(seed=0)
    model, _ = demo_warmup.supervised_warmup(WarmupSettings(steps=30, batch_size=16, eval_problems=20), log_every=0)
    assert _solution_nll(model, tokenizer, problems) < 0.6 * _solution_nll(untrained, tokenizer, problems)


def test_history_stats_and_plot(tmp_path):
    history = [
        {"step": 10, "reward": 0.2, "entropy": 0.5, "ampo/replaced_row_fraction": 0.2, "ampo/all_fail_fraction": 0.8,
         "ampo/replaced_rows": 10.0, "ampo/teacher_share/column": 0.6, "ampo/teacher_share/terse": 0.4},
        {"step": 20, "reward": 0.4, "entropy": 0.4, "ampo/replaced_row_fraction": 0.1, "ampo/all_fail_fraction": 0.6,
         "ampo/replaced_rows": 30.0, "ampo/teacher_share/column": 1.0, "ampo/teacher_share/terse": 0.0},
        {"step": 30, "reward": 0.5, "entropy": 0.3, "ampo/replaced_row_fraction": 0.1, "ampo/all_fail_fraction": 0.5,
         "ampo/replaced_rows": 0.0, "ampo/teacher_share/column": float("nan")},
        {"step": 40, "reward": 0.6, "entropy": 0.3, "ampo/replaced_row_fraction": 0.0, "ampo/all_fail_fraction": 0.4,
         "ampo/replaced_rows": 0.0},
        {"step": 40, "train_runtime": 12.0},
    ]  # fmt: skip
    stats = demo_run.history_stats(history)
    assert stats["teachers_chosen"] == pytest.approx({"column": 0.9, "terse": 0.1})
    assert stats["all_fail_fraction_first_quarter"] == 0.8 and stats["all_fail_fraction_last_quarter"] == 0.4
    assert stats["replaced_row_fraction"] == pytest.approx(0.1)
    path = demo_run.plot_history(history, tmp_path / "plot.png", title="test")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    grpo = demo_run.plot_history([{"step": 1, "reward": 0.1, "entropy": 1.0}], tmp_path / "grpo.png")
    assert grpo.stat().st_size > 1000


def test_sampled_pad_tokens_stay_inside_the_loss_mask(tmp_path):
    """The trap of tiny models: if a sampled pad token were masked out of the loss, the policy could escape negative
    advantages by emitting it. In TRL 1.16 (transformers generation) the mask ends at the first EOS only, and the
    tiny tokenizer's pad (<|endoftext|>) is not an EOS, so sampled pads are trained on like any token."""
    from helpers import addition_rows, generate, make_trainer

    from ampo_trl.demo.tiny import build_tiny_tokenizer

    tokenizer = build_tiny_tokenizer()
    pad, seven = tokenizer.pad_token_id, tokenizer.convert_tokens_to_ids("7")
    assert pad != tokenizer.eos_token_id
    allowed = (pad, seven)
    suppress = [i for i in range(len(tokenizer)) if i not in allowed]  # the sampler can only emit pad or "7"
    trainer = make_trainer(
        tmp_path, guidance_trigger="never", max_completion_length=12, generation_kwargs={"suppress_tokens": suppress}
    )
    output = generate(trainer, addition_rows(4))
    ids, mask = output["completion_ids"], output["completion_mask"]
    sampled_pads = (ids == pad) & (mask == 1)
    assert sampled_pads.any(), "the sampler never emitted a pad token"
    assert bool(mask.all()), "a sampled pad token (or what follows it) was masked out of the loss"


@pytest.mark.parametrize("recipe", ["ampo_cpu.yaml", "grpo_cpu.yaml"])
def test_demo_recipe_short_run(recipe, tmp_path, monkeypatch, capsys):
    from ampo_trl.cli.train import main

    monkeypatch.setenv("AMPO_TRL_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "out"
    trainer = main(
        [
            "--config", str(REPO / "recipes/demo" / recipe), "--output_dir", str(out), "--max_steps", "2",
            "--logging_steps", "1", "--per_device_train_batch_size", "32", "--demo_warmup_steps", "10",
            "--demo_warmup_batch_size", "16", "--demo_train_prompts", "64", "--demo_eval_problems", "16",
        ]
    )  # fmt: skip
    printed = capsys.readouterr().out
    assert "CPU demo summary" in printed and "held-out accuracy" in printed
    assert "\n  easy  " in printed and "\n  hard  " in printed  # before -> after, for both recipes
    assert trainer.state.global_step == 2
    summary = json.loads((out / "demo_summary.json").read_text())
    assert set(summary["before"]) == {"easy", "hard"} and set(summary["after"]) == {"easy", "hard"}
    assert summary["steps"] == 2
    assert (out / "demo_plot.png").is_file() and (out / "model.safetensors").is_file()
    card = (out / "README.md").read_text()
    assert "## Demo summary" in card and "demo: true" in card
    trainer.create_model_card(model_name="again")  # what push_to_hub and checkpoints do: the recipe must survive
    card = (out / "README.md").read_text()
    assert card.count("## Training recipe") == 1 and "## Demo summary" in card
    replaced = [entry["ampo/replaced_rows"] for entry in trainer.state.log_history if "ampo/replaced_rows" in entry]
    if recipe == "ampo_cpu.yaml":
        assert "CPU demo summary: AMPO (trigger=all_fail" in printed
        assert summary["replaced_row_fraction"] > 0 and sum(replaced) > 0
        assert "replacement rate: " in printed and "teachers chosen: " in printed
        assert "teachers chosen: none" not in printed
    else:  # plain GRPO: no guidance at all, and the summary says so
        assert trainer.args.guidance_trigger == "never"
        assert "CPU demo summary: GRPO (guidance off)" in printed
        assert "replacement rate: 0% (guidance off)" in printed and "teachers chosen" not in printed
        assert summary["replaced_row_fraction"] is None and sum(replaced) == 0


def test_demo_refuses_other_models(tmp_path, monkeypatch):
    from ampo_trl.cli.train import main

    monkeypatch.setenv("AMPO_TRL_CACHE", str(tmp_path / "cache"))
    with pytest.raises(ValueError, match="model_name_or_path: tiny"):
        main(["--config", str(REPO / "recipes/demo/ampo_cpu.yaml"), "--model_name_or_path", "Qwen/Qwen2.5-7B"])
