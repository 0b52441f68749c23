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
    # every problem is trained on, held out, or the quarantined twin of a held-out one
    everything = task.train_easy + task.eval_easy + task.train_hard + task.eval_hard + task.quarantined
    assert len(everything) == len(set(everything)) == 8100
    assert len(task.train_easy) + len(task.eval_easy) + sum(not p.hard for p in task.quarantined) == 3240
    assert Problem(37, 25).hard is False and Problem(57, 48).hard is True
    assert Problem(37, 25).twin == Problem(25, 37) and Problem(25, 37).operand_pair == (25, 37)
    with pytest.raises(ValueError, match="demo_eval_problems"):
        _ = DemoTask(eval_problems=3000).eval_hard


def test_stated_pairs_finds_what_a_text_leaks():
    assert demo_task.stated_pairs(["90+40=130, 5+7=12, 130+12=142. <answer>142</answer>"]) == {
        (40, 90), (5, 7), (12, 130)
    }  # fmt: skip
    assert demo_task.stated_pairs(["195+47"]) == {(47, 195)}  # no "95+47" inside "195+47"


def _operand_pair(text: str) -> tuple[int, int]:
    a, b = (int(x) for x in text.split("+"))
    return (min(a, b), max(a, b))


@pytest.mark.parametrize("seed", [0, 3])
def test_held_out_split_is_leak_free_for_the_recipe_data(seed):
    """Neither a held-out problem nor its commutative twin appears in the RL prompts, in any pool text (also as a
    step of another problem's solution), or in the warm-up data: checked on the data the demo recipe really uses."""
    from ampo_trl.cli.arguments import parse_args

    script_args = parse_args(["--config", str(REPO / "recipes/demo/ampo_cpu.yaml"), "--demo_seed", str(seed)])[0]
    settings = demo_run.warmup_settings(script_args)
    task = DemoTask(eval_problems=settings.eval_problems, seed=seed)
    held_out = task.held_out_pairs
    assert len(task.eval_hard) == len(task.eval_easy) == 200 and len(held_out) == 400
    assert {p.operand_pair for p in task.quarantined} <= held_out

    rows = demo_task.train_rows(
        task, script_args.demo_train_prompts, script_args.demo_hard_fraction, seed=seed, teachers=None
    )
    assert len(rows) == 8192
    prompt_pairs = {_operand_pair(row["prompt"][-1]["content"]) for row in rows}
    assert not prompt_pairs & held_out
    pool_texts = [solution["text"] for row in rows for solution in row["teacher_solutions"]]
    assert not demo_task.stated_pairs(pool_texts) & held_out
    hard_prompts = {row["prompt"][-1]["content"] for row in rows if row["difficulty"] == "hard"}
    assert len(hard_prompts) > 3000  # the RL prompts cover most of the training problems

    warmup_pairs = {p.operand_pair for batch in demo_warmup.warmup_batches(settings) for p in batch}
    assert sum(len(batch) for batch in demo_warmup.warmup_batches(settings)) == settings.steps * settings.batch_size
    assert any(Problem(*pair).hard for pair in warmup_pairs)  # the 1% hard problems are there...
    assert not warmup_pairs & held_out  # ...and none is held out


def test_the_old_split_leaked_and_the_new_one_does_not():
    """The first split held out problems one by one: most held-out hard problems had their twin in training."""
    import random

    hard = [Problem(a, b) for a in range(10, 100) for b in range(10, 100) if a + b >= 100]
    random.Random("0-True").shuffle(hard)
    old_held_out, old_train = hard[:200], set(hard[200:])
    assert sum(p.twin in old_train for p in old_held_out) == 190  # the number the issue reported
    task = DemoTask()
    assert not {p.twin for p in task.eval_hard} & set(task.train_hard)


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
    for row in rows[:20]:  # each pool holds the teachers' solutions of the row's own problem
        problem = Problem(*(int(x) for x in row["prompt"][-1]["content"].split("+")))
        assert [entry["text"] for entry in row["teacher_solutions"]] == [
            t(problem) for t in demo_task.TEACHERS.values()
        ]


def test_every_demo_method_of_a_seed_starts_from_the_same_warmup():
    """The warm-up is keyed by its settings (seed included) and every demo recipe has the same ones: a sweep over
    methods with seed s reuses one student, and seeds get different students."""
    from ampo_trl.cli.arguments import parse_args

    def key(recipe, seed):
        script_args = parse_args(["--config", str(REPO / "recipes/demo" / recipe), "--demo_seed", str(seed)])[0]
        return demo_run.warmup_settings(script_args).key()

    recipes = ["ampo_cpu.yaml", "grpo_cpu.yaml", "luffy_cpu.yaml", "sft_cpu.yaml"]
    for seed in (0, 1):
        assert len({key(recipe, seed) for recipe in recipes}) == 1
    assert key("ampo_cpu.yaml", 0) != key("ampo_cpu.yaml", 1)
    payload = demo_warmup.WarmupSettings().key()
    assert payload != WarmupSettings(seed=1).key()


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
        messages = demo_task.prompt_messages(problem)
        prompt_ids, completion_ids = demo_warmup.encode_pair(tokenizer, messages, demo_task.column_solution(problem))
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


@pytest.mark.parametrize("recipe", ["ampo_cpu.yaml", "grpo_cpu.yaml", "luffy_cpu.yaml", "sft_cpu.yaml"])
def test_demo_recipe_short_run(recipe, tmp_path, monkeypatch, capsys):
    from ampo_trl.cli.arguments import parse_args
    from ampo_trl.cli.train import main

    monkeypatch.setenv("AMPO_TRL_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "out"
    trainer = main(
        [
            "--config", str(REPO / "recipes/demo" / recipe), "--output_dir", str(out), "--max_steps", "2",
            "--logging_steps", "1", "--per_device_train_batch_size", "32", "--demo_warmup_steps", "10",
            "--demo_warmup_batch_size", "16", "--demo_train_prompts", "64", "--demo_eval_problems", "16",
            "--demo_eval_steps", "1", "--demo_pass_at_k_samples", "3",
        ]
    )  # fmt: skip
    printed = capsys.readouterr().out
    assert "CPU demo summary" in printed and "held-out accuracy" in printed and "pass@3" in printed
    assert "\n  easy  " in printed and "\n  hard  " in printed  # before -> after, for every recipe
    assert trainer.state.global_step == 2
    summary = json.loads((out / demo_run.SUMMARY_FILE).read_text())
    assert set(summary["before"]) == {"easy", "hard"} and set(summary["after"]) == {"easy", "hard"}
    assert summary["steps"] == 2 and summary["task_version"] == demo_task.TASK_VERSION
    assert summary["eval_problems"] == {"easy": 16, "hard": 16}
    assert set(summary["pass_at_k"]["before"]) == set(summary["pass_at_k"]["after"]) == {"1", "2", "3"}
    assert [step for step, _ in summary["curves"]["demo/heldout_hard"]] == [0, 1, 2]
    warmup_args = ["--demo_warmup_steps", "10", "--demo_warmup_batch_size", "16", "--demo_eval_problems", "16"]
    script_args = parse_args(["--config", str(REPO / "recipes/demo" / recipe), *warmup_args])[0]
    assert summary["warmup"]["key"] == demo_run.warmup_settings(script_args).key()
    assert (out / "demo_plot.png").is_file() and (out / "model.safetensors").is_file()
    if recipe == "sft_cpu.yaml":
        assert "SFT on the teacher pool" in printed and summary["settings"]["demo_sft"] is True
        assert [step for step, _ in summary["curves"]["loss"]] == [1, 2] and not summary["curves"]["reward"]
        assert type(trainer).__name__ == "Trainer"
        assert trainer.args.per_device_train_batch_size == 32 and trainer.args.learning_rate == 2e-4
        return
    card = (out / "README.md").read_text()
    assert "## Demo summary" in card and "demo: true" in card
    trainer.create_model_card(model_name="again")  # what push_to_hub and checkpoints do: the recipe must survive
    card = (out / "README.md").read_text()
    assert card.count("## Training recipe") == 1 and "## Demo summary" in card
    replaced = [entry["ampo/replaced_rows"] for entry in trainer.state.log_history if "ampo/replaced_rows" in entry]
    if recipe == "grpo_cpu.yaml":  # plain GRPO: no guidance at all, and the summary says so
        assert trainer.args.guidance_trigger == "never"
        assert "CPU demo summary: GRPO (guidance off)" in printed
        assert "replacement rate: 0% (guidance off)" in printed and "teachers chosen" not in printed
        assert summary["replaced_row_fraction"] is None and sum(replaced) == 0
    else:
        assert summary["replaced_row_fraction"] > 0 and sum(replaced) > 0
        assert "replacement rate: " in printed and "teachers chosen: " in printed
        assert "teachers chosen: none" not in printed
    if recipe == "ampo_cpu.yaml":
        assert "CPU demo summary: AMPO (trigger=all_fail" in printed
    if recipe == "luffy_cpu.yaml":  # one teacher row in every group of 8, whether it failed or not
        assert summary["replaced_row_fraction"] == pytest.approx(1 / 8)
        assert summary["settings"]["off_policy_aggregation"] == "token"


def test_demo_sft_needs_the_demo():
    from ampo_trl.cli.arguments import AMPOScriptArguments

    with pytest.raises(ValueError, match="demo: true"):
        AMPOScriptArguments(demo_sft=True)
    with pytest.raises(ValueError, match="demo_eval_steps"):
        AMPOScriptArguments(demo=True, demo_eval_steps=-1)


def test_sft_baseline_trains_on_every_pool_entry_in_the_warmup_format():
    from ampo_trl.demo import sft
    from ampo_trl.demo.tiny import build_tiny_tokenizer

    rows = demo_task.train_rows(DemoTask(eval_problems=20), num_prompts=5, hard_fraction=1.0, seed=2)
    pairs = sft.pool_pairs(rows)
    assert len(pairs) == 15 and pairs[1] == (rows[0]["prompt"], rows[0]["teacher_solutions"][1]["text"])
    tokenizer = build_tiny_tokenizer()
    batch = sft.PairCollator(tokenizer)(pairs[:2])
    prompt_ids, completion_ids = demo_warmup.encode_pair(tokenizer, *pairs[0])
    labels = batch["labels"][0].tolist()
    assert labels[: len(prompt_ids)] == [-100] * len(prompt_ids)  # no loss on the prompt
    assert labels[len(prompt_ids) : len(prompt_ids) + len(completion_ids)] == completion_ids  # solution + EOS
    assert completion_ids[-1] == tokenizer.eos_token_id


def test_demo_refuses_other_models(tmp_path, monkeypatch):
    from ampo_trl.cli.train import main

    monkeypatch.setenv("AMPO_TRL_CACHE", str(tmp_path / "cache"))
    with pytest.raises(ValueError, match="model_name_or_path: tiny"):
        main(["--config", str(REPO / "recipes/demo/ampo_cpu.yaml"), "--model_name_or_path", "Qwen/Qwen2.5-7B"])


class _FakeBackend:
    """Stands in for the shared TransformersBackend: answers from a script, records the sampling settings."""

    calls = []
    answers = {}

    def __init__(self, model, tokenizer, batch_size=8, progress=True):
        self.tokenizer = tokenizer

    def generate(self, requests, settings):
        from ampo_trl.generation import Generation

        _FakeBackend.calls.append(settings)
        out = []
        for request in requests:
            question = self.tokenizer.decode(request.prompt_ids).split("user\n")[1].split("<|im_end|>")[0]
            texts = _FakeBackend.answers[question]
            out.append([Generation(texts[i % len(texts)]) for i in range(request.num_samples)])
        return out


def test_held_out_evaluation_goes_through_the_shared_backend(monkeypatch):
    """Greedy accuracy asks the shared backend for one greedy answer per problem; pass@k samples n answers at
    temperature 1 and applies the evaluator's unbiased estimator."""
    from ampo_trl.demo import heldout
    from ampo_trl.demo.tiny import build_tiny_model_and_tokenizer

    model, tokenizer = build_tiny_model_and_tokenizer()
    monkeypatch.setattr(heldout, "TransformersBackend", _FakeBackend)
    _FakeBackend.calls = []
    problems = [Problem(95, 47), Problem(10, 20)]
    _FakeBackend.answers = {
        "95+47": ["<answer>142</answer>", "<answer>141</answer>", "<answer>1</answer>", "x"],  # 1 of 4 right
        "10+20": ["<answer>31</answer>"],  # never right
    }
    assert heldout.greedy_accuracy(model, tokenizer, problems) == 0.5
    assert _FakeBackend.calls[-1].temperature == 0.0  # greedy
    curve = heldout.pass_at_k_curve(model, tokenizer, problems, num_samples=4, seed=7)
    settings = _FakeBackend.calls[-1]
    assert settings.temperature == 1.0 and settings.seed == 7
    assert list(curve) == ["1", "2", "3", "4"]
    assert curve["1"] == pytest.approx((1 / 4 + 0) / 2) and curve["2"] == pytest.approx((1 / 2 + 0) / 2)
    assert curve["4"] == pytest.approx(0.5)


def test_greedy_accuracy_matches_plain_generate():
    """The backend's greedy decoding gives the same answers as a direct model.generate on the tiny student."""
    import torch

    from ampo_trl.demo import heldout
    from ampo_trl.demo.tiny import build_tiny_model_and_tokenizer

    model, tokenizer = build_tiny_model_and_tokenizer(seed=1)
    problems = DemoTask(eval_problems=20).eval_hard[:6]
    right = []
    for problem in problems:
        text = tokenizer.apply_chat_template(demo_task.prompt_messages(problem), add_generation_prompt=True,
                                             tokenize=False)  # fmt: skip
        ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            out = model.generate(ids, max_new_tokens=heldout.MAX_NEW_TOKENS, do_sample=False,
                                 eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)  # fmt: skip
        answer = tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
        right += exact_answer_reward([answer], [problem.answer])
    model.train()
    assert heldout.greedy_accuracy(model, tokenizer, problems) == sum(right) / len(problems)
    assert model.training  # the evaluation restores the training mode


def test_held_out_curve_logs_every_n_steps_but_not_the_last():
    from types import SimpleNamespace

    from ampo_trl.demo.heldout import HeldOutCurve

    seen = []
    callback = HeldOutCurve(lambda model: seen.append(model) or {"easy": 1.0, "hard": 0.25}, every=2)
    state = SimpleNamespace(global_step=0, max_steps=6, log_history=[])
    for step in range(1, 7):
        state.global_step = step
        callback.on_step_end(None, state, None, model="m")
    assert state.log_history == [
        {"step": 2, "demo/heldout_easy": 1.0, "demo/heldout_hard": 0.25},
        {"step": 4, "demo/heldout_easy": 1.0, "demo/heldout_hard": 0.25},
    ]  # step 6 is the final evaluation's
    with pytest.raises(ValueError):
        HeldOutCurve(lambda model: {}, every=0)
