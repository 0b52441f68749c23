"""AMPOTrainer wired into TRL: equivalence with GRPO, replacement, scoring, metrics, bad input."""

import math

import pytest
import torch
from datasets import Dataset
from helpers import (
    addition_rows,
    always_correct_reward,
    exact_answer_reward,
    generate,
    generation_inputs,
    hand_gold_logps,
    make_trainer,
)
from trl import GRPOConfig, GRPOTrainer

from ampo_trl import AMPOConfig, AMPOTrainer
from ampo_trl.advantages import compute_advantages
from ampo_trl.demo.tiny import build_tiny_model_and_tokenizer
from ampo_trl.errors import DataFormatError
from ampo_trl.guidance import comprehension_score
from ampo_trl.rewards import format_reward


def _assert_batches_equal(first, second):
    assert first.keys() == second.keys()
    for key in first:
        if isinstance(first[key], torch.Tensor):
            torch.testing.assert_close(first[key], second[key], atol=0, rtol=0, msg=key)
        else:
            assert first[key] == second[key], key


# ------------------------------------------------------------------------------------------- equivalence with GRPO


@pytest.mark.parametrize("trigger, reward", [("never", exact_answer_reward), ("all_fail", always_correct_reward)])
def test_without_replacement_the_batch_is_exactly_grpo(tmp_path, trigger, reward):
    grpo = make_trainer(tmp_path, GRPOTrainer, reward_funcs=[reward])
    ampo = make_trainer(tmp_path, reward_funcs=[reward], guidance_trigger=trigger)
    rows = addition_rows(2)
    _assert_batches_equal(generate(grpo, rows, seed=3), generate(ampo, rows, seed=3))


def prepared_micro_batches(trainer, rows, seed=0):
    """The micro-batches of one generation batch, as `_prepare_inputs` buffers them for the loss."""
    trainer.model.train()
    trainer._step, trainer._buffered_inputs = 0, None
    torch.manual_seed(seed)
    trainer._prepare_inputs(generation_inputs(trainer, rows))
    return trainer._buffered_inputs


@pytest.mark.parametrize("trigger, reward", [("never", exact_answer_reward), ("all_fail", always_correct_reward)])
def test_without_replacement_the_micro_batches_are_exactly_grpo(tmp_path, trigger, reward):
    settings = dict(per_device_train_batch_size=4, gradient_accumulation_steps=4, reward_funcs=[reward])
    grpo = make_trainer(tmp_path, GRPOTrainer, **settings)
    ampo = make_trainer(tmp_path, guidance_trigger=trigger, **settings)
    rows = addition_rows(4)
    for expected, actual in zip(prepared_micro_batches(grpo, rows), prepared_micro_batches(ampo, rows), strict=True):
        _assert_batches_equal(expected, actual)


@pytest.mark.parametrize("grouping", ["guided", "always", "never"])
def test_guided_batches_are_cut_into_length_sorted_micro_batches(tmp_path, grouping):
    trainer = make_trainer(
        tmp_path, per_device_train_batch_size=4, gradient_accumulation_steps=4, length_grouping=grouping
    )
    micro_batches = prepared_micro_batches(trainer, addition_rows(4))
    widths = [batch["completion_ids"].size(1) for batch in micro_batches]
    longest = [int(batch["completion_mask"].sum(1).max()) for batch in micro_batches]
    assert sum(int(batch["ampo_is_teacher"].sum()) for batch in micro_batches) == 8  # k = 2 in 4 failed groups
    if grouping == "never":
        assert len(set(widths)) == 1 and widths[0] > min(longest)  # TRL's: every micro-batch as wide as the widest
    else:
        assert widths == longest and widths == sorted(widths) and widths[0] < widths[-1]
    ratio = trainer._metrics["train"]["ampo/loss_padding_ratio"][-1]
    real = sum(int(batch["completion_mask"].sum()) for batch in micro_batches)
    assert ratio == pytest.approx(sum(batch["completion_mask"].numel() for batch in micro_batches) / real)


@pytest.mark.parametrize(
    "settings",
    [
        {"scale_rewards": "group"},
        {"scale_rewards": "batch"},
        {"scale_rewards": "none"},
        {"multi_objective_aggregation": "normalize_then_sum", "reward_weights": [0.9, 0.1]},
        {"reward_weights": [0.9, 0.1]},
    ],
)
def test_advantage_function_matches_trl(tmp_path, settings):
    """Guards against TRL changing its advantage normalisation under us."""

    def noisy_reward(completions, **kwargs):
        return [float(len(c[0]["content"]) % 3) for c in completions]

    grpo = make_trainer(tmp_path, GRPOTrainer, reward_funcs=[exact_answer_reward, noisy_reward], **settings)
    captured = {}
    original = grpo._calculate_rewards

    def capture(*args, **kwargs):
        captured["rewards"] = original(*args, **kwargs)
        return captured["rewards"]

    grpo._calculate_rewards = capture
    batch = generate(grpo, addition_rows(4))
    advantages, _ = compute_advantages(
        captured["rewards"],
        grpo.reward_weights,
        grpo.num_generations,
        scale_rewards=grpo.scale_rewards,
        multi_objective_aggregation=grpo.multi_objective_aggregation,
    )
    torch.testing.assert_close(advantages, batch["advantages"], atol=0, rtol=0)


def test_a_grpo_config_is_accepted_and_converted(tmp_path):
    model, tokenizer = build_tiny_model_and_tokenizer()
    args = GRPOConfig(
        output_dir=str(tmp_path),
        per_device_train_batch_size=8,
        num_generations=4,
        max_completion_length=8,
        report_to="none",
        use_cpu=True,
        generation_batch_size=16,
    )
    trainer = AMPOTrainer(
        model=model,
        reward_funcs=exact_answer_reward,
        args=args,
        train_dataset=Dataset.from_list(addition_rows(4)),
        processing_class=tokenizer,
    )
    assert isinstance(trainer.args, AMPOConfig)
    assert trainer.args.guidance_trigger == "all_fail" and trainer.args.num_replacements == 2
    assert trainer.args.generation_batch_size == 16 and trainer.args.steps_per_generation == 2


# --------------------------------------------------------------------------------------------------- replacement


@pytest.fixture  # per test, not per module: mutation testing maps a fixture's work to the first test using it
def guided(tmp_path_factory):
    trainer = make_trainer(tmp_path_factory.mktemp("guided"), guidance_trigger="all_fail", log_completions=True)
    rows = addition_rows(2)
    return trainer, rows, generate(trainer, rows)


def test_triggered_groups_get_k_teacher_rows_with_teacher_tokens(guided):
    trainer, rows, batch = guided
    tokenizer = trainer.processing_class
    teacher = batch["ampo_is_teacher"]
    assert teacher.tolist().count(True) == 4  # k = 2 in each of the two all-fail groups
    for group in range(2):
        assert teacher[group * 4 : group * 4 + 4].sum() == 2
        texts = {s["text"] for s in rows[group]["teacher_solutions"]}
        for row in range(group * 4, group * 4 + 4):
            if not teacher[row]:
                continue
            length = int(batch["completion_mask"][row].sum())
            ids = batch["completion_ids"][row, :length].tolist()
            assert ids[-1] == tokenizer.eos_token_id
            assert tokenizer.decode(ids[:-1]) in texts
            assert (batch["completion_ids"][row, length:] == tokenizer.pad_token_id).all()
    assert batch["completion_ids"].size(1) > 16  # widened for teacher solutions longer than the sampled ones


def test_every_group_trigger_puts_teacher_rows_into_groups_that_are_all_correct(tmp_path):
    trainer = make_trainer(
        tmp_path, guidance_trigger="every_group", num_replacements=1, reward_funcs=[always_correct_reward]
    )
    batch = generate(trainer, addition_rows(2))
    teacher = batch["ampo_is_teacher"]
    assert [int(teacher[g * 4 : g * 4 + 4].sum()) for g in range(2)] == [1, 1]  # LUFFY-style: one per group
    assert torch.allclose(batch["advantages"], torch.zeros_like(batch["advantages"]))  # every reward is 1


def test_teacher_rows_get_positive_and_failed_rows_negative_advantages(guided):
    _, _, batch = guided
    teacher = batch["ampo_is_teacher"]
    assert (batch["advantages"][teacher] > 0).all()
    assert (batch["advantages"][~teacher] < 0).all()


def test_the_two_teachers_of_a_group_are_distinct_pool_entries(guided):
    trainer, rows, batch = guided
    tokenizer = trainer.processing_class
    for group in range(2):
        chosen = [
            tokenizer.decode(batch["completion_ids"][r, : int(batch["completion_mask"][r].sum()) - 1])
            for r in range(group * 4, group * 4 + 4)
            if batch["ampo_is_teacher"][r]
        ]
        assert len(set(chosen)) == 2


def test_completion_table_shows_teacher_rows(guided):
    trainer, _, batch = guided
    sources = list(trainer._logs["extra"]["source"])[-8:]
    assert [s != "policy" for s in sources] == batch["ampo_is_teacher"].tolist()
    assert set(sources) - {"policy"} <= {"terse", "steps", "verbose"}
    completions = list(trainer._logs["completion"])[-8:]
    for source, completion in zip(sources, completions):
        if source != "policy":
            assert "<answer>" in completion[0]["content"]
    rewards = list(trainer._logs["rewards"]["exact_answer_reward"])[-8:]
    assert [r == 1.0 for r in rewards] == [s != "policy" for s in sources]
    torch.testing.assert_close(torch.tensor(list(trainer._logs["advantages"])[-8:]), batch["advantages"])


def test_guidance_metrics_are_recorded(guided):
    trainer, _, _ = guided
    metrics = trainer._metrics["train"]
    assert metrics["ampo/triggered_group_fraction"][-1] == 1.0
    assert metrics["ampo/replaced_rows"][-1] == 4.0
    assert metrics["ampo/all_fail_fraction"][-1] == 1.0
    assert metrics["ampo/scoring_forwards"][-1] >= 1
    shares = [metrics[f"ampo/teacher_share/{t}"][-1] for t in trainer._teachers_seen]
    assert sum(shares) == pytest.approx(1.0)
    assert 0 < metrics["ampo/comprehension/mean"][-1] < 1
    assert metrics["ampo/teacher_incorrect_fraction"][-1] == 0.0


def test_comprehension_selection_picks_the_best_understood_solutions(tmp_path):
    trainer = make_trainer(tmp_path, guidance_trigger="all_fail", num_replacements=1)
    rows = addition_rows(1)
    batch = generate(trainer, rows)
    tokenizer = trainer.processing_class
    row = rows[0]
    prompt_ids = tokenizer.apply_chat_template(
        row["prompt"], add_generation_prompt=True, tokenize=True, return_dict=True
    )["input_ids"]
    scores = {}
    for solution in row["teacher_solutions"]:
        head = prompt_ids + tokenizer(solution["text"][: solution["text"].rfind("<answer>")] + "<answer>")["input_ids"]
        gold = tokenizer(row["answer"])["input_ids"]
        ids = torch.tensor([head + gold + tokenizer("</answer>")["input_ids"] + [tokenizer.eos_token_id]])
        with torch.no_grad():
            logits = trainer.model(input_ids=ids).logits[0].float()
        logps = torch.log_softmax(logits, -1)
        gold_logps = torch.stack([logps[len(head) + i - 1, t] for i, t in enumerate(gold)])
        scores[solution["text"]] = comprehension_score(gold_logps)
    chosen_row = batch["ampo_is_teacher"].nonzero().item()
    length = int(batch["completion_mask"][chosen_row].sum())
    chosen = tokenizer.decode(batch["completion_ids"][chosen_row, : length - 1])
    assert chosen == max(scores, key=lambda text: (scores[text], -len(text)))
    logged = trainer._metrics["train"]["ampo/comprehension_selected/mean"][-1]
    assert logged == pytest.approx(scores[chosen], rel=1e-3)


def test_shortest_selection_and_decisions_are_reproducible(tmp_path):
    trainer = make_trainer(tmp_path, guidance_trigger="all_fail", guidance_selection="shortest", num_replacements=1)
    first = generate(trainer, addition_rows(2))
    tokenizer = trainer.processing_class
    for row in first["ampo_is_teacher"].nonzero().flatten().tolist():
        assert tokenizer.decode(first["completion_ids"][row, :4]).startswith("<answer>")  # the terse teacher
    second = generate(trainer, addition_rows(2))  # same step, same prompts -> same rows replaced
    assert first["ampo_is_teacher"].tolist() == second["ampo_is_teacher"].tolist()


def test_token_budget_bounds_the_scoring_forwards(tmp_path):
    small = make_trainer(tmp_path, comprehension_token_budget=1)
    generate(small, addition_rows(2))
    large = make_trainer(tmp_path, comprehension_token_budget=100_000)
    generate(large, addition_rows(2))
    # candidates of similar length share passes (padding stays within 25%), at most one per pass under a tiny budget
    assert small._metrics["train"]["ampo/scoring_forwards"][-1] == 6.0
    assert large._metrics["train"]["ampo/scoring_forwards"][-1] < 6.0


def test_plain_text_prompts_are_guided_too(tmp_path):
    trainer = make_trainer(tmp_path, rows=addition_rows(4, conversational=False))
    batch = generate(trainer, addition_rows(2, conversational=False))
    assert batch["ampo_is_teacher"].sum() == 4
    completions = list(trainer._logs["completion"])[-8:]
    assert all(isinstance(c, str) for c in completions)


def test_no_replacement_in_eval_mode(tmp_path):
    trainer = make_trainer(tmp_path)
    trainer.model.eval()
    torch.manual_seed(0)
    inputs = [dict(row) for row in addition_rows(2) for _ in range(4)]
    batch = trainer._generate_and_score_completions(inputs)
    assert "ampo_is_teacher" not in batch
    assert list(trainer._logs["extra"]["source"])[-8:] == ["policy"] * 8


def test_training_updates_parameters_and_logs_ampo_metrics(tmp_path):
    trainer = make_trainer(tmp_path, max_steps=2)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    changed = [n for n, p in trainer.model.named_parameters() if not torch.equal(p.detach(), before[n])]
    assert len(changed) == len(before)
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logs) == 2
    for entry in logs:
        assert entry["ampo/replaced_rows"] > 0
        assert "ampo/off_policy_loss" in entry and "ampo/on_policy_loss" in entry
        assert 0 < entry["ampo/off_policy/prob_mean"] < 1
        assert math.isfinite(entry["loss"])


# ------------------------------------------------------------------------------------------------------- bad input


def test_without_a_pool_column_the_trainer_is_grpo_and_says_so(tmp_path, caplog):
    rows = addition_rows(2, pool=False)
    with caplog.at_level("WARNING"):
        ampo = make_trainer(tmp_path, rows=rows)
    assert caplog.text.count("AMPO guidance is inactive") == 1 and "no column 'teacher_solutions'" in caplog.text
    grpo = make_trainer(tmp_path, GRPOTrainer, rows=rows)
    _assert_batches_equal(generate(grpo, rows, seed=5), generate(ampo, rows, seed=5))
    assert not any(key.startswith("ampo/") for key in ampo._metrics["train"])
    assert "source" not in ampo._logs["extra"]  # the completions table is TRL's too


def test_a_pool_without_any_gold_column_fails_before_training(tmp_path):
    rows = [{k: v for k, v in row.items() if k != "answer"} for row in addition_rows(4)]
    with pytest.raises(ValueError, match="no gold-answer column.*'answer' \\(answer_column\\)"):
        make_trainer(tmp_path, rows=rows, reward_funcs=[always_correct_reward])
    # the authors' schema: the gold answer in reward_model.ground_truth is found without any setting
    rows = [
        {**{k: v for k, v in row.items() if k != "answer"}, "reward_model": {"ground_truth": row["answer"]}}
        for row in addition_rows(2)
    ]
    trainer = make_trainer(tmp_path, rows=rows, reward_funcs=[always_zero_reward], require_verified_teachers=False)
    assert generate(trainer, rows)["ampo_is_teacher"].any()


def test_a_row_without_a_gold_answer_is_refused_with_its_row_named(tmp_path):
    rows = addition_rows(4)
    rows[2]["answer"] = " "
    with pytest.raises(DataFormatError, match="row 2, column 'answer'.*fill in the answer or drop the row"):
        make_trainer(tmp_path, rows=rows)


def test_golds_the_verifier_cannot_parse_are_reported_at_start_up(tmp_path, caplog):
    from ampo_trl.rewards import accuracy_reward

    rows = addition_rows(2)
    rows[1]["answer"] = "E_{1},E_{2}"  # Math-Verify reads it only as a string: no answer could ever verify
    with caplog.at_level("WARNING"):
        make_trainer(tmp_path, rows=rows, reward_funcs=[accuracy_reward])
    assert "unparsable_gold: 1" in caplog.text and "row 1" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):  # a reward without Math-Verify: golds are not parsed
        make_trainer(tmp_path, rows=rows)
    assert "unparsable_gold" not in caplog.text


def test_unverified_teacher_solutions_never_enter_a_batch_unless_allowed(tmp_path):
    rows = addition_rows(2)
    for row in rows:  # the shortest solution is wrong: shortest-first selection would take it first
        row["teacher_solutions"].insert(0, {"teacher": "wrong", "text": "<answer>999</answer>"})
    calls = []

    def counting_reward(completions, **kwargs):
        calls.append(len(completions))
        return exact_answer_reward(completions, **kwargs)

    trainer = make_trainer(tmp_path, rows=rows, reward_funcs=[counting_reward], guidance_selection="shortest")
    generate(trainer, rows)
    chosen = {guidance["teacher"] for guidance in trainer.last_guidance}
    assert chosen and "wrong" not in chosen
    assert trainer._metrics["train"]["ampo/skipped_unverified"][-1] == 2.0  # one per triggered group
    assert trainer._metrics["train"]["ampo/teacher_incorrect_fraction"][-1] == 0.0
    scored = sum(calls)
    generate(trainer, rows, seed=1)  # the same solutions again: verified once, remembered
    assert sum(calls) - scored == 8  # only the 8 sampled completions were scored this time

    allowed = make_trainer(tmp_path, rows=rows, guidance_selection="shortest", require_verified_teachers=False)
    generate(allowed, rows)
    assert "wrong" in {guidance["teacher"] for guidance in allowed.last_guidance}
    assert allowed._metrics["train"]["ampo/teacher_incorrect_fraction"][-1] == 0.5


def test_malformed_pool_entry_names_row_and_entry(tmp_path):
    rows = addition_rows(4)
    rows[2]["teacher_solutions"] = [{"teacher": "a", "text": "<answer>1</answer>"}, {"teacher": "b", "body": "x"}]
    with pytest.raises(DataFormatError, match=r"row 2, column 'teacher_solutions', entry 1: no solution text"):
        make_trainer(tmp_path, rows=rows)


def test_empty_pools_and_overlong_solutions_are_counted_not_dropped_silently(tmp_path, caplog):
    rows = addition_rows(2)
    rows[0]["teacher_solutions"] = []
    rows[1]["teacher_solutions"].append({"teacher": "essayist", "text": "x" * 500 + "<answer>9</answer>"})
    rows[1]["teacher_solutions"].append({"teacher": "blank", "text": "  "})
    with caplog.at_level("WARNING"):
        trainer = make_trainer(tmp_path, rows=rows)
        batch = generate(trainer, rows)
    metrics = trainer._metrics["train"]
    assert metrics["ampo/empty_pool_groups"][-1] == 1.0
    assert metrics["ampo/skipped_too_long"][-1] == 1.0
    assert metrics["ampo/skipped_empty_text"][-1] == 1.0
    assert batch["ampo_is_teacher"][:4].sum() == 0 and batch["ampo_is_teacher"][4:].sum() == 2
    assert "empty guidance pool" in caplog.text and "max_teacher_length=96" in caplog.text


def test_unknown_correctness_reward_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="correctness_reward='accuracy'.*exact_answer_reward"):
        make_trainer(tmp_path, correctness_reward="accuracy")


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"num_replacements": 4}, "smaller than num_generations"),
        ({"num_replacements": 0}, "num_replacements must be >= 1"),
        ({"shaping_gamma": 0.0}, "shaping_gamma must be > 0"),
        ({"guidance_trigger": "sometimes"}, "guidance_trigger must be one of"),
        ({"guidance_selection": "best"}, "guidance_selection must be one of"),
        ({"off_policy_aggregation": "row"}, "off_policy_aggregation must be one of"),
        ({"comprehension_format_weight": 2.0}, "comprehension_format_weight"),
        ({"teacher_reward_floor": 1.0, "multi_objective_aggregation": "normalize_then_sum"}, "teacher_reward_floor"),
        ({"hybrid_trigger_probability": 1.5}, "hybrid_trigger_probability"),
        ({"guidance_trigger": "hybrid", "hybrid_trigger_probability": 0.0}, "is 'all_fail'"),
        ({"comprehension_token_budget": 0}, "comprehension_token_budget"),
        ({"max_teacher_length": 0}, "max_teacher_length"),
    ],
)
def test_config_rejects_contradictions_with_a_fix(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        AMPOConfig(
            output_dir=str(tmp_path), num_generations=4, per_device_train_batch_size=4, use_cpu=True, **overrides
        )


def test_config_defaults_are_the_papers():
    config = AMPOConfig(output_dir="unused", num_generations=8, per_device_train_batch_size=8, use_cpu=True)
    assert (config.guidance_trigger, config.num_replacements, config.guidance_selection) == (
        "all_fail",
        2,
        "comprehension",
    )
    assert (config.comprehension_mean, config.shaping_gamma, config.off_policy_aggregation) == (
        "geometric",
        0.1,
        "sequence",
    )
    assert config.teacher_reward_floor is None and config.comprehension_format_weight == 0.0
    assert config.effective_max_teacher_length == config.max_completion_length


# ------------------------------------------------------------------------------------------- review regressions


def test_non_string_ground_truths_are_scored_like_their_text(tmp_path):
    text_rows = addition_rows(2)
    other_rows = [dict(row) for row in text_rows]
    other_rows[0]["answer"] = {"ground_truth": int(text_rows[0]["answer"])}
    other_rows[1]["answer"] = {"ground_truth": float(text_rows[1]["answer"])}
    scores = []
    for rows in (text_rows, other_rows):
        trainer = make_trainer(tmp_path, rows=rows, reward_funcs=[always_zero_reward], require_verified_teachers=False)
        generate(trainer, rows)
        scores.append([(g["row"], g["teacher"], round(g["score"], 6)) for g in trainer.last_guidance])
    assert scores[0] == scores[1] and len(scores[0]) == 4


def always_zero_reward(completions, **kwargs):
    return [0.0] * len(completions)


def test_special_token_strings_in_teacher_text_stay_text(tmp_path):
    rows = addition_rows(1)
    rows[0]["teacher_solutions"] = [
        {"teacher": "leaky", "text": f"Done.<|im_end|> more <|endoftext|> text <answer>{rows[0]['answer']}</answer>"},
        {"teacher": "plain", "text": f"<answer>{rows[0]['answer']}</answer>"},
    ]
    trainer = make_trainer(tmp_path, rows=rows)
    batch = generate(trainer, rows)
    eos = trainer.processing_class.eos_token_id
    assert batch["ampo_is_teacher"].sum() == 2
    for row in batch["ampo_is_teacher"].nonzero().flatten().tolist():
        length = int(batch["completion_mask"][row].sum())
        ids = batch["completion_ids"][row, :length].tolist()
        assert ids.count(eos) == 1 and ids[-1] == eos  # only the final EOS, none inside the text


def test_streaming_datasets_are_not_read_at_start_up(tmp_path):
    from datasets import IterableDataset

    reads = []

    def rows():
        reads.append(1)
        yield from addition_rows(4)

    model, tokenizer = build_tiny_model_and_tokenizer()
    args = AMPOConfig(
        output_dir=str(tmp_path), per_device_train_batch_size=8, num_generations=4, max_steps=1,
        max_completion_length=8, report_to="none", use_cpu=True, bf16=False,
    )  # fmt: skip
    AMPOTrainer(
        model=model, reward_funcs=exact_answer_reward, args=args,
        train_dataset=IterableDataset.from_generator(rows), processing_class=tokenizer,
    )  # fmt: skip
    assert reads == []


def test_teacher_token_cache_is_bounded(tmp_path, monkeypatch):
    import ampo_trl.trainer as trainer_module

    monkeypatch.setattr(trainer_module, "TEACHER_TOKEN_CACHE_SIZE", 3)
    trainer = make_trainer(tmp_path)
    for i in range(10):
        assert (
            trainer._teacher_tokens(f"solution {i} <answer>{i}</answer>")[-1] == trainer.processing_class.eos_token_id
        )
    assert list(trainer._teacher_token_cache) == [f"solution {i} <answer>{i}</answer>" for i in (7, 8, 9)]


def test_generation_batches_within_one_optimizer_step_get_different_seeds(tmp_path):
    trainer = make_trainer(tmp_path, gradient_accumulation_steps=4, steps_per_generation=1)
    keys = set()
    for micro_step in range(4):
        trainer._step = micro_step
        keys.add(trainer._generation_key())
    assert len(keys) == 4
    trainer._step = 4  # next optimizer step starts at micro-step 0 again: the optimizer step tells them apart
    assert trainer._generation_key()[2] == 0


def test_rollout_func_is_rejected_with_guidance(tmp_path):
    model, tokenizer = build_tiny_model_and_tokenizer()
    args = AMPOConfig(
        output_dir=str(tmp_path), per_device_train_batch_size=8, num_generations=4, report_to="none", use_cpu=True
    )
    with pytest.raises(ValueError, match="rollout_func.*guidance_trigger='never'"):
        AMPOTrainer(
            model=model, reward_funcs=exact_answer_reward, args=args, processing_class=tokenizer,
            train_dataset=Dataset.from_list(addition_rows(4)), rollout_func=lambda prompts, trainer: {},
        )  # fmt: skip


def _loss_and_grads(trainer, batch):
    trainer.model.zero_grad(set_to_none=True)
    trainer.current_gradient_accumulation_steps = 1
    loss = trainer._compute_loss(trainer.model, batch)
    loss.backward()
    grads = {name: p.grad.detach().clone() for name, p in trainer.model.named_parameters() if p.grad is not None}
    return loss.detach(), grads


def _hand_shaping_loss(model, batch, get_logps, gamma=0.1, num_rows=8):
    """Sequence aggregation by hand: sum over teacher rows of mean_t -A f(p_t), f(p) = p / (p + gamma), / N_rows."""
    rows = batch["ampo_is_teacher"].nonzero().flatten()
    ids = torch.cat([batch["prompt_ids"][rows], batch["completion_ids"][rows]], 1)
    attention = torch.cat([batch["prompt_mask"][rows], batch["completion_mask"][rows]], 1)
    logps, _, _ = get_logps(model, ids, attention, batch["completion_ids"].size(1))
    mask = batch["completion_mask"][rows].float()
    per_token = -batch["advantages"][rows].unsqueeze(1) * logps.exp() / (logps.exp() + gamma)
    return ((per_token * mask).sum(1) / mask.sum(1)).sum() / num_rows


@pytest.mark.parametrize(
    "settings",
    [
        {},  # dapo
        {"loss_type": "grpo"},
        {"loss_type": "bnpo"},
        {"loss_type": "dr_grpo"},
        {"loss_type": "cispo"},
        {"loss_type": "sapo"},
        {"loss_type": "luspo", "importance_sampling_level": "sequence"},
        {"loss_type": "vespo"},
        {"importance_sampling_level": "sequence"},
        {"top_entropy_quantile": 0.5},
        {"mask_truncated_completions": True},
        {"pad_to_multiple_of": 8},
    ],
)
def test_every_loss_option_is_grpo_on_sampled_rows_plus_shaping_on_teacher_rows(tmp_path, settings):
    """L = (the parent's loss for these options, teacher rows contributing nothing) + (shaping term by hand), in
    value and gradient; the teacher rows are whole solutions ending in EOS whatever the option."""
    ampo = make_trainer(tmp_path, **settings)
    grpo = make_trainer(tmp_path, GRPOTrainer, **settings)
    batch = generate(ampo, addition_rows(2))
    teacher = batch["ampo_is_teacher"]
    assert teacher.sum() == 4
    eos = ampo.processing_class.eos_token_id
    for row in teacher.nonzero().flatten().tolist():
        length = int(batch["completion_mask"][row].sum())
        assert length > 1 and batch["completion_ids"][row, length - 1] == eos  # never masked as truncated
    on_policy_mask = batch["completion_mask"] * (~teacher).unsqueeze(1)
    assert batch["num_items_in_batch"].item() == on_policy_mask.sum().item()  # sequence mode: on-policy tokens
    longest_teacher = int(batch["completion_mask"][teacher].sum(1).max())
    assert longest_teacher > 16  # wider than any sampled completion: the batch was widened for it, no more
    multiple = settings.get("pad_to_multiple_of", 1)
    assert batch["completion_ids"].size(1) == math.ceil(longest_teacher / multiple) * multiple
    ampo_loss, ampo_grads = _loss_and_grads(ampo, batch)

    grpo.model.load_state_dict(ampo.model.state_dict())
    on_policy_batch = {key: value for key, value in batch.items() if not key.startswith("ampo_")}
    on_policy_batch["tool_mask"] = (~teacher).unsqueeze(1).to(batch["completion_mask"].dtype)
    grpo_loss, grpo_grads = _loss_and_grads(grpo, on_policy_batch)
    grpo.model.zero_grad(set_to_none=True)
    shaping = _hand_shaping_loss(grpo.model, batch, grpo._get_per_token_logps_and_entropies)
    shaping.backward()
    shaping_grads = {name: p.grad for name, p in grpo.model.named_parameters() if p.grad is not None}

    assert shaping.item() < 0  # positive teacher advantages: the shaping term lowers the loss
    assert ampo_loss.item() == pytest.approx(grpo_loss.item() + shaping.item(), abs=1e-6)
    assert ampo_grads.keys() == grpo_grads.keys() == shaping_grads.keys()
    for name in ampo_grads:
        torch.testing.assert_close(ampo_grads[name], grpo_grads[name] + shaping_grads[name], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize(
    "settings",
    [
        {"guidance_trigger": "hybrid", "hybrid_trigger_probability": 0.5},
        {"guidance_trigger": "adaptive_k", "num_replacements": 1},
        {"guidance_trigger": "always"},
        {"guidance_trigger": "every_group", "num_replacements": 3},
    ],
)
def test_every_trigger_guides_all_fail_groups(tmp_path, settings):
    """On groups that all fail, each trigger replaces its number of rows (mixed groups: tests/test_trainer_groups.py):
    hybrid, always: k = 2; adaptive_k: (G - 0) // 2 = 2 whatever k; every_group: k = 3 (at most G - 1)."""
    trainer = make_trainer(tmp_path, **settings)
    batch = generate(trainer, addition_rows(2))
    counts = batch["ampo_is_teacher"].view(2, 4).sum(1).tolist()
    expected = 3 if settings["guidance_trigger"] == "every_group" else 2
    assert counts == [expected, expected]
    assert trainer._metrics["train"]["ampo/triggered_group_fraction"][-1] == 1.0


def test_teacher_reward_floor_raises_teacher_rows_before_normalising(tmp_path):
    trainer = make_trainer(tmp_path, teacher_reward_floor=2.0, scale_rewards="none")
    batch = generate(trainer, addition_rows(2))
    teacher = batch["ampo_is_teacher"]
    # teacher rows re-scored at 1.0 and raised to 2.0, sampled rows 0: the mean of (0, 0, 2, 2) is 1.0
    torch.testing.assert_close(batch["advantages"], torch.where(teacher, 1.0, -1.0))
    assert trainer._metrics["train"]["ampo/teacher_reward_mean"][-1] == 1.0  # the re-scored reward, not the floor


def test_comprehension_options_reach_the_score(tmp_path):
    """Arithmetic mean, format weight and bf16 rounding: the logged score of each chosen solution is the one computed
    by hand with those options, and the chosen ones are the best two of their pool."""
    trainer = make_trainer(
        tmp_path, comprehension_mean="arithmetic", comprehension_format_weight=0.1, comprehension_round_to_bf16=True
    )
    rows = addition_rows(2)
    generate(trainer, rows)
    for group, row in enumerate(rows):
        expected = {}
        for solution in row["teacher_solutions"]:
            logps = hand_gold_logps(
                trainer.model, trainer.processing_class, row["prompt"], solution["text"], row["answer"]
            )
            expected[solution["teacher"]] = comprehension_score(
                logps, "arithmetic", format_reward([solution["text"]])[0], 0.1, round_to_bf16=True
            )
        chosen = {g["teacher"]: g["score"] for g in trainer.last_guidance if g["group"] == group}
        assert len(chosen) == 2
        for teacher, score in chosen.items():
            assert score == pytest.approx(expected[teacher], abs=1e-6)
        assert min(chosen.values()) >= max(v for t, v in expected.items() if t not in chosen)


def test_random_selection_runs_no_scoring_forward(tmp_path):
    trainer = make_trainer(tmp_path, guidance_selection="random")
    batch = generate(trainer, addition_rows(2))
    assert batch["ampo_is_teacher"].sum() == 4
    assert all(g["score"] is None for g in trainer.last_guidance)
    assert trainer._metrics["train"]["ampo/scoring_forwards"][-1] == 0.0


def test_splice_leaves_prompts_alone_when_they_are_as_wide_as_the_completions(tmp_path):
    """Prompt tensors are told apart by name, not only by width: a prompt exactly as wide as the sampled completions
    must not be widened or filled like a per-token completion field."""
    rows = addition_rows(2)
    tokenizer = build_tiny_model_and_tokenizer()[1]
    prompt_length = len(
        tokenizer.apply_chat_template(rows[0]["prompt"], add_generation_prompt=True, tokenize=True, return_dict=True)[
            "input_ids"
        ]
    )
    trainer = make_trainer(tmp_path, max_completion_length=prompt_length)
    grpo = make_trainer(tmp_path, GRPOTrainer, max_completion_length=prompt_length)
    batch, plain = generate(trainer, rows), generate(grpo, rows)
    assert plain["completion_ids"].size(1) == prompt_length == plain["prompt_ids"].size(1)  # the case under test
    assert batch["ampo_is_teacher"].sum() == 4 and batch["completion_ids"].size(1) > prompt_length
    torch.testing.assert_close(batch["prompt_ids"], plain["prompt_ids"], atol=0, rtol=0)
    torch.testing.assert_close(batch["prompt_mask"], plain["prompt_mask"], atol=0, rtol=0)


def test_an_unknown_per_token_field_from_a_newer_trl_stops_with_a_clear_error(tmp_path, monkeypatch):
    original = GRPOTrainer._generate_and_score_completions

    def with_a_new_field(self, inputs):
        output = original(self, inputs)
        output["new_per_token_field"] = torch.zeros_like(output["completion_mask"])
        return output

    monkeypatch.setattr(GRPOTrainer, "_generate_and_score_completions", with_a_new_field)
    trainer = make_trainer(tmp_path)
    with pytest.raises(RuntimeError, match="per-token field 'new_per_token_field'.*version is newer than the one"):
        generate(trainer, addition_rows(2))
