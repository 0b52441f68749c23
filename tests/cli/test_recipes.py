"""Every recipe under recipes/ parses with the script's parser, names only known keys, has a launch line whose
accelerate config exists, and has consistent batch arithmetic for the number of processes it is launched on.
No model is loaded and nothing is downloaded."""

import re
import shlex
from pathlib import Path

import pytest
import yaml

from ampo_trl.cli.arguments import AMPOScriptArguments, SFTScriptArguments, config_fields, make_parser, make_sft_parser
from ampo_trl.cli.batching import plan_from_mapping
from ampo_trl.cli.checks import resolve_rewards

REPO = Path(__file__).resolve().parents[2]
RECIPES = sorted((REPO / "recipes").rglob("*.yaml"))
PAPER_DIRS = ("qwen2.5-7b-instruct", "qwen2.5-1.5b-instruct")


def _rel(path: Path) -> str:
    return path.relative_to(REPO).as_posix()


def _values(recipe: Path) -> dict:
    values = yaml.safe_load(recipe.read_text())
    assert isinstance(values, dict), f"{_rel(recipe)} is not a YAML mapping"
    return values


def _launch(recipe: Path) -> dict:
    """The `accelerate launch ...` line of the recipe header: script, accelerate config, processes."""
    lines = [line.lstrip("# ").strip() for line in recipe.read_text().splitlines() if line.startswith("#")]
    commands = [line for line in lines if line.startswith("accelerate launch") and f"--config {_rel(recipe)}" in line]
    assert commands, f"{_rel(recipe)}: no '# accelerate launch ... --config {_rel(recipe)}' line in the header"
    words = shlex.split(commands[0])
    script = next(word for word in words if word.startswith("scripts/"))
    config_file = words[words.index("--config_file") + 1] if "--config_file" in words else None
    num_processes = int(words[words.index("--num_processes") + 1]) if "--num_processes" in words else None
    if num_processes is None:
        if config_file is None:
            num_processes = 1  # accelerate's default without a config file on a machine without GPUs
        else:
            num_processes = int(yaml.safe_load((REPO / config_file).read_text())["num_processes"])
    return {"script": script, "config_file": config_file, "num_processes": num_processes, "words": words}


def _is_sft(recipe: Path) -> bool:
    return _launch(recipe)["script"] == "scripts/train_sft.py"


def test_there_are_recipes_for_every_experiment():
    names = {_rel(recipe) for recipe in RECIPES}
    expected = {
        "recipes/demo/ampo_cpu.yaml",
        "recipes/demo/grpo_cpu.yaml",
        "recipes/qwen2.5-7b-instruct/ampo.yaml",
        "recipes/qwen2.5-7b-instruct/grpo.yaml",
        "recipes/qwen2.5-7b-instruct/sft.yaml",
        "recipes/qwen2.5-7b-instruct/ablation_always_replace.yaml",
        "recipes/qwen2.5-7b-instruct/ablation_token_level_off_policy.yaml",
        "recipes/qwen2.5-7b-instruct/ablation_shortest_selection.yaml",
        "recipes/qwen2.5-7b-instruct/ablation_random_selection.yaml",
        "recipes/qwen2.5-7b-instruct/ablation_k1.yaml",
        "recipes/qwen2.5-7b-instruct/ablation_k3.yaml",
        "recipes/qwen2.5-7b-instruct/ablation_k4.yaml",
        "recipes/qwen2.5-7b-instruct/teachers_r1_only.yaml",
        "recipes/qwen2.5-7b-instruct/teachers_two.yaml",
        "recipes/qwen2.5-1.5b-instruct/ampo.yaml",
        "recipes/qwen2.5-1.5b-instruct/grpo.yaml",
    }
    assert expected <= names, sorted(expected - names)


@pytest.mark.parametrize("recipe", RECIPES, ids=_rel)
def test_recipe_keys_are_known(recipe):
    fields = config_fields()
    if _is_sft(recipe):
        import dataclasses

        from trl import SFTConfig

        known = {f.name for f in dataclasses.fields(SFTConfig)}
        known |= {f.name for f in dataclasses.fields(SFTScriptArguments)}
        known |= fields["ModelConfig"] | fields["DatasetMixtureConfig"]
    else:
        known = set().union(*fields.values())
    unknown = sorted(set(_values(recipe)) - known - {"env"})
    assert not unknown, f"{_rel(recipe)}: keys unknown to the parser: {unknown}"


@pytest.mark.parametrize("recipe", RECIPES, ids=_rel)
def test_recipe_parses_and_batches_form_whole_groups(recipe, tmp_path):
    launch = _launch(recipe)
    if launch["config_file"] is not None:
        assert (REPO / launch["config_file"]).is_file(), launch["config_file"]
    values = _values(recipe)
    # GPU recipes use bf16, which TrainingArguments refuses on a CPU-only machine: parse them with bf16 off.
    overrides = ["--output_dir", str(tmp_path), "--bf16", "false"]
    parser = make_sft_parser() if _is_sft(recipe) else make_parser()
    parsed = parser.parse_args_and_config(["--config", str(recipe), *overrides])
    script_args, training_args = parsed[0], parsed[1]
    if _is_sft(recipe):
        assert isinstance(script_args, SFTScriptArguments)
        return
    assert isinstance(script_args, AMPOScriptArguments)
    functions = resolve_rewards(script_args.reward_funcs)
    if training_args.reward_weights is not None:
        assert len(training_args.reward_weights) == len(functions)
    plan = plan_from_mapping(values, launch["num_processes"])  # raises on groups that do not fit
    assert plan.generation_batch_size % plan.num_generations == 0
    assert plan.steps_per_generation % plan.gradient_accumulation_steps == 0, (
        f"{_rel(recipe)}: a generation round should hold a whole number of optimizer steps ({plan.describe()})"
    )
    if training_args.guidance_trigger != "never":
        correctness = functions[0].__name__
        assert correctness in ("accuracy_reward", "exact_answer_reward", "ampo_released_reward"), "accuracy first"
        assert training_args.num_replacements < training_args.num_generations


@pytest.mark.parametrize("recipe", [r for r in RECIPES if r.parent.name in PAPER_DIRS and not _is_sft(r)], ids=_rel)
def test_paper_recipes_use_the_paper_batch_and_hyperparameters(recipe):
    values = _values(recipe)
    plan = plan_from_mapping(values, _launch(recipe)["num_processes"])
    assert plan.prompts_per_generation == 128  # 128 prompts x 8 rollouts per training step
    assert plan.num_generations == 8
    assert plan.completions_per_optimizer_step == 512  # mini-batch of 64 prompts
    assert plan.optimizer_steps_per_generation == 2
    expected = {
        "learning_rate": 1e-6,
        "lr_scheduler_type": "constant",
        "weight_decay": 0.1,
        "max_grad_norm": 1.0,
        "temperature": 1.0,
        "max_completion_length": 8192,
        "max_prompt_length": 1024,
        "epsilon": 0.2,
        "entropy_coef": 0.001,
        "beta": 0.0,
        "loss_type": "dr_grpo" if recipe.name == "released_code.yaml" else "dapo",  # released: sum / max length
        "num_iterations": 1,
        "use_vllm": True,
    }
    for key, value in expected.items():
        assert values[key] == value, f"{_rel(recipe)}: {key}={values[key]!r}, paper: {value!r}"
    assert values["max_steps"] in (1000, 1020)  # 500 rounds (paper) or 510 (released code) x 2 optimizer steps
    if recipe.name == "released_code.yaml":  # 0.9 acc + 0.1 fmt and the repetition penalty in one function
        assert values["reward_funcs"] == ["ampo_released"] and values["correctness_threshold"] == 0.9
    else:
        assert values["reward_funcs"][:2] == ["accuracy", "format"] and values["reward_weights"][:2] == [0.9, 0.1]


# Each variant differs from the main 7B recipe only in these keys (and output_dir / max_steps where noted).
VARIANTS = {
    "grpo.yaml": {"guidance_trigger": "never"},
    "ablation_always_replace.yaml": {"guidance_trigger": "always"},
    "ablation_token_level_off_policy.yaml": {"off_policy_aggregation": "token"},
    "ablation_shortest_selection.yaml": {"guidance_selection": "shortest"},
    "ablation_random_selection.yaml": {"guidance_selection": "random"},
    "ablation_k1.yaml": {"num_replacements": 1},
    "ablation_k3.yaml": {"num_replacements": 3},
    "ablation_k4.yaml": {"num_replacements": 4},
    "teachers_r1_only.yaml": {"dataset_name": "SII-Enigma/OpenR1-Math-R1-8.5k"},
    "luffy.yaml": {
        "dataset_name": "SII-Enigma/OpenR1-Math-R1-8.5k",
        "guidance_trigger": "every_group",
        "num_replacements": 1,
        "off_policy_aggregation": "token",
    },
    "teachers_two.yaml": {"pool_teachers": ["Qwen3-8B", "DeepSeek-R1-Distill-Qwen-7B"]},
    "released_code.yaml": {
        "reward_funcs": ["ampo_released"],
        "reward_weights": [1.0],
        "correctness_threshold": 0.9,
        "normalize_solutions": False,
        "scale_rewards": "none",
        "delta": 10.0,
        "entropy_on_teacher_tokens": True,
        "released_loss_scale": True,
        "comprehension_mean": "arithmetic",
        "comprehension_format_weight": 0.1,
        "comprehension_round_to_bf16": True,
        "comprehension_sequence": "released",
        "comprehension_tie_break": "quality_score",
        "teacher_assignment": "released",
        "off_policy_aggregation": "constant",
        "loss_type": "dr_grpo",
        "teacher_reward_floor": 1.0,
        "require_verified_teachers": False,
        "max_steps": 1020,
    },
}


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_variants_change_only_their_own_keys(name):
    base = _values(REPO / "recipes/qwen2.5-7b-instruct/ampo.yaml")
    variant = _values(REPO / "recipes/qwen2.5-7b-instruct" / name)
    changed = {key for key in set(base) | set(variant) if base.get(key) != variant.get(key)} - {"output_dir"}
    assert changed == set(VARIANTS[name]), f"{name}: differs from ampo.yaml in {sorted(changed)}"
    for key, value in VARIANTS[name].items():
        assert variant[key] == value
    assert variant["output_dir"] != base["output_dir"]


def test_one_point_five_b_recipes_match_the_7b_method():
    base = _values(REPO / "recipes/qwen2.5-7b-instruct/ampo.yaml")
    small = _values(REPO / "recipes/qwen2.5-1.5b-instruct/ampo.yaml")
    layout = {
        "model_name_or_path",
        "per_device_train_batch_size",
        "gradient_accumulation_steps",
        "steps_per_generation",
        "vllm_tensor_parallel_size",
        "vllm_gpu_memory_utilization",
        "output_dir",
    }
    changed = {key for key in set(base) | set(small) if base.get(key) != small.get(key)}
    assert changed <= layout, sorted(changed - layout)
    grpo = _values(REPO / "recipes/qwen2.5-1.5b-instruct/grpo.yaml")
    changed = {key for key in set(small) | set(grpo) if small.get(key) != grpo.get(key)} - {"output_dir"}
    assert changed == {"guidance_trigger"} and grpo["guidance_trigger"] == "never"


def test_demo_recipes_differ_only_in_guidance():
    """The CPU comparison is fair: same warm-up, data, steps and learning rate; only guidance on/off."""
    ampo = _values(REPO / "recipes/demo/ampo_cpu.yaml")
    grpo = _values(REPO / "recipes/demo/grpo_cpu.yaml")
    changed = {key for key in set(ampo) | set(grpo) if ampo.get(key) != grpo.get(key)} - {"output_dir"}
    assert changed == {"guidance_trigger"}
    assert ampo["guidance_trigger"] != "never" and grpo["guidance_trigger"] == "never"
    assert ampo["demo"] is True and ampo["model_name_or_path"] == "tiny"
    launch = _launch(REPO / "recipes/demo/ampo_cpu.yaml")
    assert launch["words"][:3] == ["accelerate", "launch", "scripts/train.py"]  # the README command, no flags


def test_sft_recipe_is_the_paper_sft_baseline():
    values = _values(REPO / "recipes/qwen2.5-7b-instruct/sft.yaml")
    assert values["use_peft"] is True and values["lora_target_modules"] == "all-linear"
    assert values["num_train_epochs"] == 3 and values["learning_rate"] == 5e-5
    assert values["lr_scheduler_type"] == "cosine" and values["warmup_steps"] == 0.1
    assert values["max_length"] == 8192


def test_recipe_headers_mention_released_code_settings():
    text = (REPO / "recipes/qwen2.5-7b-instruct/ampo.yaml").read_text()
    for released in ("norm_adv_by_std_in_grpo", "clip_ratio_high", "entropy_coeff", "num_off_policy_targets"):
        assert released in text
    assert re.search(r"2 x 4 x 128 = 1024", text) and re.search(r"2 x 4 x 64 = 512", text)
