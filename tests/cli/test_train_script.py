"""scripts/train.py end to end (through `accelerate launch`, tiny model, a few steps), its data loading, and every
bad-input error it must raise before a model is loaded."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from datasets import Dataset

from ampo_trl.cli import checks
from ampo_trl.cli.arguments import AMPOScriptArguments, parse_args
from ampo_trl.cli.batching import batch_plan
from ampo_trl.cli.data import load_training_dataset
from ampo_trl.cli.train import main

REPO = Path(__file__).resolve().parents[2]
ACCELERATE = str(Path(sys.executable).with_name("accelerate"))
TEACHERS = ("AceReason", "R1-Distill", "Qwen3")


def ampo_rows(num_rows=8):
    """Rows in the official AMPO hub schema: chat prompt with an old system prompt, reward_model, target_lst."""
    rows = []
    for i in range(num_rows):
        a, b = i + 2, 3 * i + 1
        rows.append(
            {
                "data_source": "toy",
                "prompt": [
                    {"role": "system", "content": "An old stored system prompt."},
                    {"role": "user", "content": f"{a}+{b}"},
                ],
                "reward_model": {"ground_truth": str(a + b), "style": "rule"},
                "target_lst": [
                    {"content": text, "source": teacher, "quality_score": score}
                    for text, teacher, score in (
                        (f"{a}+{b}={a + b} <answer>{a + b}</answer>", TEACHERS[0], 1.0),
                        (f"<answer>{a + b}</answer>", TEACHERS[1], 0.5),
                        (f"It is {a + b}. <answer>{a + b}</answer>", TEACHERS[2], 0.2),
                    )
                ],
            }
        )
    return rows


@pytest.fixture
def ampo_parquet(tmp_path):
    path = tmp_path / "ampo_rows.parquet"
    pd.DataFrame(ampo_rows()).to_parquet(path)
    return path


@pytest.fixture
def canonical_jsonl(tmp_path):
    path = tmp_path / "custom.jsonl"
    with open(path, "w") as handle:
        for i in range(6):
            handle.write(
                json.dumps(
                    {
                        "question": f"{i}+1",
                        "gold": str(i + 1),
                        "pool": [{"teacher": "terse", "text": f"<answer>{i + 1}</answer>"}],
                    }
                )
                + "\n"
            )
    return path


def write_recipe(tmp_path, name="recipe.yaml", **values):
    recipe = {
        "model_name_or_path": "tiny",
        "use_cpu": True,
        "bf16": False,
        "report_to": "none",
        "save_strategy": "no",
        "gradient_checkpointing": False,
        "per_device_train_batch_size": 8,
        "num_generations": 4,
        "max_completion_length": 16,
        "max_teacher_length": 64,
        "max_steps": 2,
        "logging_steps": 1,
        "learning_rate": 1e-3,
        "seed": 0,
        "torch_num_threads": 1,
        "output_dir": str(tmp_path / "out"),
    }
    recipe.update(values)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(recipe))
    return path


@pytest.fixture
def no_model_loading(monkeypatch):
    """Any attempt to load a model fails the test: errors must come before that."""
    import transformers
    from trl.trainer import grpo_trainer

    def forbidden(*args, **kwargs):
        raise AssertionError("a model was loaded before the bad input was reported")

    monkeypatch.setattr(grpo_trainer, "create_model_from_path", forbidden)
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", forbidden)


# ------------------------------------------------------------------------------------------------ end to end
def test_train_script_end_to_end_through_accelerate_launch(tmp_path, ampo_parquet):
    recipe = write_recipe(
        tmp_path,
        dataset_name=str(ampo_parquet),
        system_prompt="Answer inside the tags.",
        reward_funcs=["accuracy", "format"],
        log_completions=True,
        num_completions_to_print=2,
    )
    env = {
        **os.environ,
        "AMPO_TRL_CACHE": str(tmp_path / "cache"),
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "AMPO_VERIFY_WORKERS": "1",
    }
    result = subprocess.run(
        [ACCELERATE, "launch", "--num_processes", "1", "scripts/train.py", "--config", str(recipe)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    out = tmp_path / "out"
    for name in ("model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json", "README.md"):
        assert (out / name).is_file(), name
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 2
    logged = [entry for entry in state["log_history"] if "reward" in entry]
    assert len(logged) == 2 and all("ampo/replaced_row_fraction" in entry for entry in logged)
    assert any(entry["ampo/replaced_rows"] > 0 for entry in logged)  # the random tiny model fails: guidance

    card = (out / "README.md").read_text()
    assert "ampo" in card and "2510.02227" in card and "yuan2025ampo" in card  # tag, paper, citation
    assert "## Training recipe" in card and str(ampo_parquet) in card and "reward_funcs" in card
    assert f"accelerate launch -m ampo_trl.cli.train --config {recipe}" in card  # works with or without a checkout
    assert "Batch layout: 2 prompts x 4 completions = 8 completions" in card

    tables = sorted((out / "completions").glob("*.parquet"))
    assert tables, "log_completions wrote no completions table"
    table = pd.read_parquet(tables[-1])
    assert "source" in table.columns
    assert set(table["source"]) <= {"policy", *TEACHERS} and set(table["source"]) & set(TEACHERS)
    first_prompt = list(table["prompt"].iloc[0])
    assert first_prompt[0]["role"] == "system" and first_prompt[0]["content"] == "Answer inside the tags."
    assert "2/2" in result.stderr  # the standard Trainer progress bar
    assert "model card saved" in result.stdout


# ----------------------------------------------------------------------------------------------- data loading
def _script_args(**values):
    return AMPOScriptArguments(**values)


def test_official_ampo_rows_load_without_conversion(ampo_parquet):
    dataset = load_training_dataset(_script_args(dataset_name=str(ampo_parquet), use_ampo_system_prompt=True))
    row = dataset[0]
    assert row["answer"] == "3"
    assert [entry["teacher"] for entry in row["teacher_solutions"]] == list(TEACHERS)
    assert row["prompt"][0]["content"].startswith("You are a helpful assistant. Please reason step by step")
    assert "target_lst" not in dataset.column_names  # not passed on to every reward function


def test_luffy_rows_load_and_get_the_teacher_name(tmp_path):
    path = tmp_path / "luffy.jsonl"
    with open(path, "w") as handle:
        for i in range(3):
            row = {
                "prompt": [{"role": "user", "content": f"{i}+{i}"}],
                "reward_model": {"ground_truth": str(2 * i)},
                "target": [{"role": "assistant", "content": f"<answer>{2 * i}</answer>"}],
            }
            handle.write(json.dumps(row) + "\n")
    dataset = load_training_dataset(_script_args(dataset_files=[str(path)], luffy_teacher_name="R1"))
    assert dataset["answer"] == ["0", "2", "4"]
    assert dataset[1]["teacher_solutions"] == [{"teacher": "R1", "text": "<answer>2</answer>"}]


def test_columns_are_mapped_by_options_and_strings_become_chats(canonical_jsonl):
    dataset = load_training_dataset(
        _script_args(
            dataset_name=str(canonical_jsonl),
            dataset_prompt_column="question",
            dataset_answer_column="gold",
            dataset_pool_column="pool",
            system_prompt="Be brief.",
        )
    )
    assert {"prompt", "answer", "teacher_solutions"} <= set(dataset.column_names)
    assert dataset[2]["prompt"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+1"}]
    assert dataset[2]["answer"] == "3"


def test_directory_of_parquet_files_and_max_train_samples(tmp_path):
    directory = tmp_path / "data"
    directory.mkdir()
    for part in range(2):
        pd.DataFrame(ampo_rows(4)).to_parquet(directory / f"part-{part}.parquet")
    dataset = load_training_dataset(_script_args(dataset_name=str(directory), max_train_samples=5))
    assert len(dataset) == 5


def test_pool_teachers_keeps_only_the_named_teachers(ampo_parquet):
    dataset = load_training_dataset(_script_args(dataset_name=str(ampo_parquet), pool_teachers=["Qwen3"]))
    assert all([e["teacher"] for e in pool] == ["Qwen3"] for pool in dataset["teacher_solutions"])


def test_max_prompt_length_drops_long_prompts(tmp_path):
    from ampo_trl.demo.tiny import build_tiny_tokenizer

    rows = ampo_rows(4)
    rows[1]["prompt"][1]["content"] = "x" * 300
    path = tmp_path / "rows.parquet"
    pd.DataFrame(rows).to_parquet(path)
    dataset = load_training_dataset(
        _script_args(dataset_name=str(path), max_prompt_length=100), tokenizer=build_tiny_tokenizer()
    )
    assert len(dataset) == 3


def test_batch_plan_arithmetic():
    plan = batch_plan(2, 4, 64, 8, steps_per_generation=128)
    assert (plan.generation_batch_size, plan.prompts_per_generation) == (1024, 128)
    assert plan.completions_per_optimizer_step == 512 and plan.optimizer_steps_per_generation == 2
    assert batch_plan(8, 1, 1, 4, generation_batch_size=16).steps_per_generation == 2


# ----------------------------------------------------------------------------------------- bad inputs: errors
def test_a_dataset_without_pool_trains_as_grpo_and_says_so_before_the_model_loads(tmp_path, no_model_loading, caplog):
    path = tmp_path / "no_pool.jsonl"
    path.write_text("\n".join(json.dumps({"prompt": f"{i}+1", "answer": str(i + 1)}) for i in range(4)))
    recipe = write_recipe(tmp_path, dataset_name=str(path))
    with caplog.at_level("WARNING"), pytest.raises(AssertionError, match="a model was loaded"):
        main(["--config", str(recipe)])
    assert "AMPO guidance is inactive" in caplog.text and "no column 'teacher_solutions'" in caplog.text


def test_missing_mapped_column_is_reported(tmp_path, ampo_parquet, no_model_loading):
    recipe = write_recipe(tmp_path, dataset_name=str(ampo_parquet), dataset_prompt_column="question")
    with pytest.raises(ValueError, match="dataset_prompt_column='question': the dataset has no such column"):
        main(["--config", str(recipe)])


def test_missing_answer_for_accuracy_reward_is_reported(tmp_path, no_model_loading):
    path = tmp_path / "no_answer.jsonl"
    path.write_text("\n".join(json.dumps({"prompt": f"{i}+1"}) for i in range(4)))
    recipe = write_recipe(tmp_path, dataset_name=str(path), guidance_trigger="never")
    with pytest.raises(ValueError, match=r"need the gold answer"):
        main(["--config", str(recipe)])


def test_unknown_reward_name_is_reported(tmp_path, ampo_parquet, no_model_loading):
    recipe = write_recipe(tmp_path, dataset_name=str(ampo_parquet), reward_funcs=["accuracy", "acuracy"])
    with pytest.raises(ValueError, match="Unknown reward function 'acuracy'"):
        main(["--config", str(recipe)])


def test_reward_weights_must_match_reward_funcs(tmp_path, ampo_parquet, no_model_loading):
    recipe = write_recipe(tmp_path, dataset_name=str(ampo_parquet), reward_weights=[1.0])
    with pytest.raises(ValueError, match="reward_weights has 1 value"):
        main(["--config", str(recipe)])


def test_batch_that_cannot_form_whole_groups_is_explained(tmp_path, ampo_parquet, no_model_loading):
    recipe = write_recipe(tmp_path, dataset_name=str(ampo_parquet), per_device_train_batch_size=6)
    with pytest.raises(ValueError, match=r"cannot form whole groups: per_device_train_batch_size \(6\) x processes"):
        main(["--config", str(recipe)])
    # the same numbers for another process count, as the recipe tests use them
    with pytest.raises(ValueError, match="not a multiple of num_generations"):
        batch_plan(per_device_train_batch_size=3, num_processes=2, gradient_accumulation_steps=1, num_generations=4)


def test_unknown_recipe_key_is_reported(tmp_path, ampo_parquet):
    recipe = write_recipe(tmp_path, dataset_name=str(ampo_parquet), num_replacement=2)  # typo
    with pytest.raises(ValueError, match="num_replacement"):
        parse_args(["--config", str(recipe)])


def test_unknown_pool_teacher_lists_the_known_ones(tmp_path, ampo_parquet, no_model_loading):
    recipe = write_recipe(tmp_path, dataset_name=str(ampo_parquet), pool_teachers=["GPT-9"])
    with pytest.raises(ValueError, match=r"\['GPT-9'\], not found.*AceReason \(8\)"):
        main(["--config", str(recipe)])


def test_logger_that_is_not_installed_is_reported(tmp_path, ampo_parquet, no_model_loading, monkeypatch):
    from transformers.integrations import integration_utils

    monkeypatch.setattr(integration_utils, "is_wandb_available", lambda: False)
    recipe = write_recipe(tmp_path, dataset_name=str(ampo_parquet), report_to="wandb")
    with pytest.raises(
        ValueError,
        match=r"report_to asks for \['wandb'\].*pip install wandb\) \(or pip install 'ampo-trl\[tracking\]'\)",
    ):
        main(["--config", str(recipe)])
    assert checks.check_report_to("none") == [] and checks.check_report_to(["none"]) == []


def test_no_dataset_is_reported(tmp_path, no_model_loading):
    recipe = write_recipe(tmp_path)
    with pytest.raises(ValueError, match="No training data"):
        main(["--config", str(recipe)])


def test_cli_failure_exits_with_the_message(tmp_path, ampo_parquet):
    recipe = write_recipe(tmp_path, dataset_name=str(ampo_parquet), reward_funcs=["nope"])
    result = subprocess.run(
        [sys.executable, "scripts/train.py", "--config", str(recipe), "--max_steps", "1"],
        cwd=REPO,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "Unknown reward function 'nope'" in result.stderr


def test_command_line_overrides_the_recipe(tmp_path, ampo_parquet):
    recipe = write_recipe(tmp_path, dataset_name=str(ampo_parquet), num_replacements=2)
    script_args, training_args, model_args, _, parsed_recipe = parse_args(
        ["--config", str(recipe), "--num_replacements", "1", "--reward_funcs", "ampo"]
    )
    assert training_args.num_replacements == 1 and script_args.reward_funcs == ["ampo"]
    assert model_args.model_name_or_path == "tiny" and parsed_recipe.path == str(recipe)
    assert "num_replacements: 2" in parsed_recipe.text


def test_sft_export_from_the_pool(tmp_path, ampo_parquet):
    from ampo_trl.cli.arguments import SFTScriptArguments
    from ampo_trl.cli.data import load_sft_dataset

    dataset = load_sft_dataset(SFTScriptArguments(dataset_name=str(ampo_parquet), use_ampo_system_prompt=True))
    assert len(dataset) == 8 * 3  # every (question, teacher solution) pair
    row = dataset[0]
    assert [m["role"] for m in row["prompt"]] == ["system", "user"] and row["completion"][0]["role"] == "assistant"


def test_sft_script_runs_on_the_tiny_model(tmp_path, ampo_parquet):
    from ampo_trl.cli.train_sft import sft_main

    out = tmp_path / "sft"
    trainer = sft_main(
        [
            "--model_name_or_path", "tiny", "--dataset_name", str(ampo_parquet), "--output_dir", str(out),
            "--max_steps", "2", "--per_device_train_batch_size", "4", "--use_cpu", "true", "--bf16", "false",
            "--report_to", "none", "--save_strategy", "no", "--use_peft", "true",
            "--lora_target_modules", "all-linear", "--lora_r", "4", "--max_length", "64",
        ]
    )  # fmt: skip
    assert trainer.state.global_step == 2
    assert (out / "adapter_model.safetensors").is_file()
    card = (out / "README.md").read_text()
    assert (
        "## Training recipe" in card
        and "accelerate launch -m ampo_trl.cli.train_sft --model_name_or_path tiny" in card
        and "ampo-sft" in card
    )


def test_dataset_from_memory_passes_validation(tmp_path, tiny_model_dir, no_model_loading):
    from ampo_trl import AMPOTrainer

    dataset = Dataset.from_list([{"prompt": "1+1", "answer": "2", "teacher_solutions": []}])
    _, training_args, *_ = parse_args(["--config", str(write_recipe(tmp_path)), "--dataset_name", "unused"])
    assert checks.validate_setup(dataset, checks.resolve_rewards(["accuracy"]), None, training_args) is not None
    with pytest.raises(ValueError, match="No training row has a teacher solution with text"):
        AMPOTrainer(tiny_model_dir, checks.resolve_rewards(["accuracy"]), args=training_args, train_dataset=dataset)
