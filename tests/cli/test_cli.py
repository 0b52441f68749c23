"""The `ampo` command: dispatch to every subcommand, shipped recipe names for `--config`, `ampo demo` and
`ampo recipes`, and the scripts in scripts/ as thin wrappers over the same functions. (The installed wheel is tested
in test_wheel.py.)"""

import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

import ampo_trl.cli as cli
from ampo_trl.cli import recipes as shipped
from ampo_trl.cli.arguments import Recipe, parse_args

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = {  # scripts/<file> -> the `ampo` subcommand running the same function
    "train.py": "train",
    "train_sft.py": "train-sft",
    "evaluate.py": "evaluate",
    "build_pool.py": "build-pool",
    "benchmark.py": "benchmark",
}


def test_usage_lists_every_command_and_the_multi_process_form(capsys):
    assert cli.main(["--help"]) == 0
    text = capsys.readouterr().out
    for name in ("train", "train-sft", "evaluate", "pool", "build-pool", "benchmark", "demo", "recipes"):
        assert re.search(rf"^  {re.escape(name)} +\S", text, flags=re.M), name
    assert "accelerate launch" in text and "-m ampo_trl.cli.train" in text
    assert cli.main([]) == 2  # no command: usage, failure status
    assert cli.main(["--version"]) == 0 and "ampo_trl 0." in capsys.readouterr().out


def test_unknown_command_fails_with_the_list(capsys):
    assert cli.main(["trian"]) == 2
    error = capsys.readouterr().err
    assert "unknown command 'trian'" in error and "train-sft" in error


@pytest.mark.parametrize("command", sorted(cli.COMMANDS))
def test_each_command_runs_its_module_function_with_the_arguments(command, monkeypatch):
    module_name, function_name, _ = cli.COMMANDS[command]
    module = importlib.import_module(module_name)
    calls = []
    monkeypatch.setattr(module, function_name, lambda argv, **kwargs: calls.append((argv, kwargs)) or 3)
    monkeypatch.setattr(sys, "argv", ["ampo"])
    assert cli.main([command, "--x", "1"]) == 3  # the function's exit status is the command's
    assert calls == [(["--x", "1"], {"prog": "ampo build-pool"} if command == "build-pool" else {})]
    assert sys.argv == [f"ampo {command}", "--x", "1"]  # parsers print `usage: ampo <command> ...`


@pytest.mark.parametrize("command", sorted(cli.COMMANDS))
def test_each_command_module_also_runs_as_a_module(command):
    """`accelerate launch -m ampo_trl.cli.<module>` needs a `__main__` block calling the same function."""
    module_name, function_name, _ = cli.COMMANDS[command]
    source = Path(importlib.import_module(module_name).__file__).read_text()
    block = source[source.index('if __name__ == "__main__":') :]
    assert f"{function_name}()" in block, module_name
    assert (REPO / "ampo_trl" / "cli" / "__main__.py").is_file()  # python -m ampo_trl.cli <command>


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_scripts_are_thin_wrappers_over_the_commands(script):
    module_name, function_name, _ = cli.COMMANDS[SCRIPTS[script]]
    text = (REPO / "scripts" / script).read_text()
    assert f"from {module_name} import {function_name}" in text, script
    code = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert len(code) < 30, f"{script} should only call {module_name}.{function_name}"


# ------------------------------------------------------------------------------------------- shipped recipes
def test_shipped_recipes_are_the_repository_folder():
    assert shipped.recipes_dir() == REPO / "recipes"  # from a checkout: no second copy anywhere
    root = REPO / "recipes"
    files = sorted(path.relative_to(root).with_suffix("").as_posix() for path in root.rglob("*.yaml"))
    assert shipped.recipe_names() == files and "demo/ampo_cpu" in files and "qwen2.5-7b-instruct/ampo" in files


@pytest.mark.parametrize(
    "given", ["demo/ampo_cpu", "demo/ampo_cpu.yaml", "recipes/demo/ampo_cpu.yaml", "recipes/demo/ampo_cpu"]
)
def test_recipe_names_resolve_from_any_directory(given, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no recipes/ folder here
    assert shipped.resolve_recipe(given) == REPO / "recipes" / "demo" / "ampo_cpu.yaml"


def test_an_existing_path_wins_over_a_recipe_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "demo").mkdir()
    mine = tmp_path / "demo" / "ampo_cpu.yaml"
    mine.write_text("model_name_or_path: tiny\n")
    assert shipped.resolve_recipe("demo/ampo_cpu.yaml") == Path("demo/ampo_cpu.yaml")
    assert shipped.resolve_recipe(str(mine)) == mine


@pytest.mark.parametrize("given", ["nope", "demo/../../pyproject", "", "qwen2.5-7b-instruct"])
def test_unknown_recipe_names_list_the_shipped_ones(given, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"neither a YAML file nor a shipped recipe.*demo/ampo_cpu, "):
        shipped.resolve_recipe(given)


def test_config_argument_forms_are_resolved(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    demo = str(REPO / "recipes" / "demo" / "grpo_cpu.yaml")
    assert shipped.resolve_config_argument(["--config", "demo/grpo_cpu", "--x", "1"]) == ["--config", demo, "--x", "1"]
    assert shipped.resolve_config_argument(["--config=demo/grpo_cpu"]) == ["--config", demo]
    assert shipped.resolve_config_argument(["--x", "1"]) == ["--x", "1"]
    with pytest.raises(FileNotFoundError, match="^--config: 'nope'"):
        shipped.resolve_config_argument(["--config", "nope"])


def test_train_parses_a_shipped_recipe_by_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = ["--config", "qwen2.5-7b-instruct/grpo", "--output_dir", str(tmp_path), "--bf16", "false"]
    script_args, training_args, model_args, _, recipe = parse_args(argv)
    assert model_args.model_name_or_path == "Qwen/Qwen2.5-7B-Instruct" and training_args.guidance_trigger == "never"
    assert script_args.dataset_name == "SII-Enigma/OpenR1-Math-4LongCoTs-8.5k"
    assert recipe.argv == argv  # the model card shows the command as typed ...
    assert Path(recipe.path) == REPO / "recipes/qwen2.5-7b-instruct/grpo.yaml"  # ... and the recipe it read
    assert recipe.text == (REPO / "recipes/qwen2.5-7b-instruct/grpo.yaml").read_text()
    assert Recipe.from_argv(["--output_dir", "x"]).path is None


def test_a_wrong_recipe_name_fails_before_anything_is_loaded(capsys):
    assert cli.main(["train", "--config", "demo/nope"]) == 2
    assert "ampo train: error: --config: 'demo/nope' is neither" in capsys.readouterr().err


def test_recipes_command_lists_shows_and_locates(capsys):
    assert shipped.main([]) == 0
    listing = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in listing] == shipped.recipe_names()
    assert any(line.startswith("demo/ampo_cpu ") and "AMPO CPU demo" in line for line in listing)
    assert all(len(line) <= 119 for line in listing)
    assert shipped.main(["show", "demo/grpo_cpu"]) == 0
    assert capsys.readouterr().out == (REPO / "recipes/demo/grpo_cpu.yaml").read_text()
    assert shipped.main(["path", "qwen2.5-7b-instruct/sft"]) == 0
    assert capsys.readouterr().out.strip() == str(REPO / "recipes/qwen2.5-7b-instruct/sft.yaml")
    assert shipped.main(["show", "nope"]) == 2 and "neither a YAML file" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        shipped.main(["show"])
    assert "needs a recipe name" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------- ampo demo
@pytest.mark.parametrize(
    "given, recipe",
    [([], "ampo_cpu")] + [(["--recipe", name], name) for name in ("grpo_cpu", "luffy_cpu", "sft_cpu")],
)
def test_demo_runs_the_shipped_demo_recipe_with_the_overrides(given, recipe, monkeypatch):
    from ampo_trl.cli import demo, train

    calls = []
    monkeypatch.setattr(train, "main", lambda argv: calls.append(argv) or "trainer")
    overrides = ["--max_steps", "2", "--report_to", "tensorboard"]  # --r...: not an abbreviation of --recipe
    assert demo.main([*given, *overrides]) == "trainer"
    assert calls == [["--config", str(REPO / "recipes" / "demo" / f"{recipe}.yaml"), *overrides]]


def test_every_demo_recipe_is_offered_and_shipped():
    from ampo_trl.cli import demo

    assert set(demo.DEMO_RECIPES) == {path.stem for path in (REPO / "recipes" / "demo").glob("*.yaml")}


def test_demo_help_and_bad_recipe(capsys):
    from ampo_trl.cli import demo

    with pytest.raises(SystemExit) as exit_info:
        demo.main(["--help"])
    assert exit_info.value.code == 0 and "ampo train --help" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        demo.main(["--recipe", "sft"])
    assert exit_info.value.code == 2 and "invalid choice" in capsys.readouterr().err


def test_python_dash_m_runs_the_command():
    completed = subprocess.run(
        [sys.executable, "-m", "ampo_trl.cli", "recipes", "path", "demo/ampo_cpu"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == str(REPO / "recipes" / "demo" / "ampo_cpu.yaml")


def test_cost_model_counts_the_extra_tokens_of_a_step():
    from ampo_trl.cli.benchmark import cost_model

    cost = cost_model(prompts=10, generations=8, prompt_tokens=100, completion_tokens=500, teacher_tokens=2000,
                      teachers=4, replacements=2, trigger_rate=0.5)  # fmt: skip
    assert cost["generated"] == 10 * 8 * 500 and cost["loss_pass"] == 10 * 8 * 600
    assert cost["scoring"] == 5 * 4 * 2100  # 5 triggered prompts, 4 candidates each, prompt + solution
    assert cost["teacher_extra"] == 5 * 2 * 1500  # two completions of 500 swapped for solutions of 2000
