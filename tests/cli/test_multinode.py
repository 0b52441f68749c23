"""Several machines: the batch arithmetic with machines x processes (`ampo_trl.cli.batching`, what the train script
checks before loading a model), and the multi-node commands of docs/distributed.md parsed by the parsers that
will run them (accelerate's launcher, TRL's `vllm-serve`, the train script) and put through that check."""

import re
import shlex
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from datasets import Dataset

from ampo_trl.cli.arguments import parse_args
from ampo_trl.cli.batching import batch_plan, num_machines_from_env, plan_from_config, plan_from_mapping
from ampo_trl.cli.checks import validate_setup
from ampo_trl.cli.recipes import resolve_recipe

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "distributed.md"
BATCH_KEYS = ("per_device_train_batch_size", "gradient_accumulation_steps", "steps_per_generation", "num_generations")


# --------------------------------------------------------------------------------------------- batch arithmetic
def test_plan_on_two_machines_of_eight():
    plan = batch_plan(
        per_device_train_batch_size=2,
        num_processes=16,
        num_machines=2,
        gradient_accumulation_steps=16,
        num_generations=8,
        steps_per_generation=32,
    )
    assert (plan.generation_batch_size, plan.prompts_per_generation, plan.processes_per_machine) == (1024, 128, 8)
    assert plan.completions_per_optimizer_step == 512 and plan.optimizer_steps_per_generation == 2
    assert "on 16 processes (2 machines x 8);" in plan.describe()
    single = batch_plan(2, 16, 16, 8, steps_per_generation=32)  # the arithmetic counts processes, not machines
    assert single.generation_batch_size == plan.generation_batch_size and "16 process(es)" in single.describe()


def test_multi_machine_errors_spell_out_the_layout():
    with pytest.raises(ValueError, match=r"processes \(16 = 2 machines x 8\) x steps_per_generation \(32\) = 1024"):
        batch_plan(2, 16, 16, 12, steps_per_generation=32, num_machines=2)
    with pytest.raises(
        ValueError, match=r"per_device_train_batch_size \(3\) x processes \(16 = 2 machines x 8\) = 48"
    ):
        batch_plan(3, 16, 1, 8, generation_batch_size=64, num_machines=2)
    with pytest.raises(
        ValueError, match=r"num_processes \(12\) counts the processes of all machines.*--num_processes"
    ):
        batch_plan(2, 12, 1, 8, num_machines=8)
    with pytest.raises(ValueError, match="num_machines must be >= 1"):
        batch_plan(2, 16, 1, 8, num_machines=0)


@pytest.mark.parametrize(
    "env, machines",
    [
        ({"WORLD_SIZE": "16", "LOCAL_WORLD_SIZE": "8"}, 2),  # torchrun on each of 2 nodes
        ({"WORLD_SIZE": "16", "LOCAL_WORLD_SIZE": "8", "GROUP_WORLD_SIZE": "2"}, 2),
        ({"WORLD_SIZE": "16", "GROUP_WORLD_SIZE": "4"}, 4),
        ({"WORLD_SIZE": "16", "GROUP_WORLD_SIZE": "3"}, 1),  # inconsistent: not trusted
        ({"WORLD_SIZE": "4", "LOCAL_WORLD_SIZE": "4"}, 1),
        ({"WORLD_SIZE": "16", "LOCAL_WORLD_SIZE": "x"}, 1),
        ({}, 1),
    ],
)
def test_machines_come_from_the_launcher_environment(env, machines, monkeypatch):
    for name in ("WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert num_machines_from_env() == machines


def test_the_train_script_check_describes_a_two_node_launch(monkeypatch):
    """What validate_setup (step 1 of the train script) computes in a process of a 2 x 8 launch."""
    monkeypatch.setenv("WORLD_SIZE", "16")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    monkeypatch.delenv("GROUP_WORLD_SIZE", raising=False)
    # GRPOConfig's values as TRL derives them on 16 processes (generation_batch_size = 2 x 16 x 32).
    training_args = SimpleNamespace(
        per_device_train_batch_size=2,
        gradient_accumulation_steps=16,
        num_generations=8,
        generation_batch_size=1024,
        answer_column="answer",
        reward_weights=None,
    )
    dataset = Dataset.from_list([{"prompt": "1+1?", "answer": "2"}])
    plan = validate_setup(dataset, [lambda completions, **kwargs: [0.0]], None, training_args)
    assert (plan.num_processes, plan.num_machines, plan.steps_per_generation) == (16, 2, 32)
    assert "1024 completions per generation round on 16 processes (2 machines x 8)" in plan.describe()
    assert plan_from_config(training_args, num_processes=16).num_machines == 1  # explicit count: as given


# --------------------------------------------------------------------------------- docs/distributed.md commands
def _section_commands() -> list[list[str]]:
    text = DOC.read_text()
    section = text[text.index("## Several machines") :]
    section = section[: section.index("\n## ", 1)]
    commands = []
    for block in re.findall(r"```bash\n(.*?)\n```", section, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                commands.append(shlex.split(line))
    return commands


def _options(words: list[str]) -> dict[str, str]:
    return {word[2:]: words[i + 1] for i, word in enumerate(words[:-1]) if word.startswith("--")}


def test_the_multi_node_commands_parse_and_fit_the_paper_batch(tmp_path):
    from accelerate.commands.launch import launch_command_parser
    from transformers import HfArgumentParser
    from trl.scripts.vllm_serve import ScriptArguments as ServerArguments

    commands = _section_commands()
    servers = [words for words in commands if "vllm-serve" in words]
    launches = [words for words in commands if words[:2] == ["accelerate", "launch"]]
    assert len(servers) == 1 and len(launches) == 2

    (server,) = HfArgumentParser(ServerArguments).parse_args_into_dataclasses(
        servers[0][servers[0].index("vllm-serve") + 1 :]
    )
    assert server.data_parallel_size * server.tensor_parallel_size == 8 and server.max_model_len >= 1024 + 8192

    parsed = [launch_command_parser().parse_args(words[2:]) for words in launches]
    assert sorted(args.machine_rank for args in parsed) == [0, 1]
    assert {(args.num_machines, args.num_processes, args.main_process_ip) for args in parsed} == {
        (2, 16, parsed[0].main_process_ip)
    }
    assert all(args.module and args.training_script == "ampo_trl.cli.train" for args in parsed)
    assert all((REPO / args.config_file).is_file() for args in parsed)
    train_argv = parsed[0].training_script_args
    assert all(args.training_script_args == train_argv for args in parsed)  # the same run on every node

    script_args, training_args, _, _, recipe = parse_args(
        [*train_argv, "--bf16", "false", "--output_dir", str(tmp_path)]
    )
    assert training_args.use_vllm and training_args.vllm_mode == "server"
    assert training_args.vllm_server_host not in ("0.0.0.0", "localhost", parsed[0].main_process_ip)  # its own node
    assert training_args.vllm_server_port == server.port
    assert Path(recipe.path) == resolve_recipe("qwen2.5-7b-instruct/ampo")

    values = yaml.safe_load(Path(recipe.path).read_text())
    overrides = {key: int(value) for key, value in _options(train_argv).items() if key in BATCH_KEYS}
    assert overrides, "the commands should set the batch layout for 16 processes"
    plan = plan_from_mapping({**values, **overrides}, num_processes=16, num_machines=2)
    assert plan.prompts_per_generation == 128 and plan.num_generations == 8  # the paper: 128 prompts x 8
    assert plan.completions_per_optimizer_step == 512 and plan.optimizer_steps_per_generation == 2
    doc = DOC.read_text()
    assert plan.describe().split(";")[0] in doc.replace("\n", " ")  # the log line quoted in the docs
    layout = (plan.per_device_train_batch_size, plan.steps_per_generation, plan.gradient_accumulation_steps)
    assert f"{layout[0]} × 16 × {layout[1]} = 1024" in doc and f"{layout[0]} × 16 × {layout[2]} = 512" in doc


def test_the_error_quoted_in_the_docs_is_the_real_one():
    with pytest.raises(ValueError) as error:
        batch_plan(2, 16, 16, 12, steps_per_generation=32, num_machines=2)
    quoted = re.search(r"an\s+impossible layout is reported.*?: `(.*?)`", DOC.read_text(), flags=re.S).group(1)
    assert " ".join(quoted.split()) in str(error.value)
