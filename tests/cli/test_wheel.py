"""The built wheel is enough: build it from the sources, install it into a fresh virtual environment outside the
checkout, and from a temporary directory run a few steps of `ampo demo` (the recipe comes from the wheel) and every
subcommand's `--help`.

To stay fast the fresh environment sees the packages of the environment running the tests (a `.pth` file lists
its site-packages; they are appended to `sys.path`, after the fresh environment's own, and their `.pth` files are
not processed, so an editable install of the checkout stays invisible). ampo_trl itself, its `ampo` / `ampo-pool`
scripts and its recipes come from the wheel only: the test checks where they are imported from."""

import json
import os
import shutil
import site
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from ampo_trl.cli import COMMANDS

REPO = Path(__file__).resolve().parents[2]
SOURCES = ("pyproject.toml", "README.md", "LICENSE", "ampo_trl", "recipes")  # what the build needs


def _run(command, *, cwd, env, timeout=300):
    completed = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert completed.returncode == 0, f"{command} failed:\n{completed.stdout[-3000:]}\n{completed.stderr[-5000:]}"
    return completed


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(fresh venv directory, its environment, a working directory outside the checkout, the wheel path)."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "src"
    source.mkdir()
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(REPO / name, source / name)
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    _run([*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(root / "dist"), str(source)],
         cwd=root, env=env)  # fmt: skip
    (wheel,) = (root / "dist").glob("ampo_trl-*.whl")

    venv = root / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=root, env=env)
    python = venv / "bin" / "python"
    purelib = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                        cwd=root, env=env).stdout.strip())  # fmt: skip
    outer = [path for path in {*site.getsitepackages(), sysconfig.get_paths()["purelib"]} if Path(path).is_dir()]
    (purelib / "outer_environment.pth").write_text("\n".join(sorted(outer)) + "\n")
    _run([*pip, "--python", str(python), "install", "--no-deps", "--no-index", str(wheel)], cwd=root, env=env)
    work = root / "work"
    work.mkdir()
    env.update(AMPO_TRL_CACHE=str(root / "cache"), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    return venv, env, work, wheel


def test_the_wheel_holds_every_module_and_recipe_and_nothing_else(installed):
    wheel = installed[3]
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {p.relative_to(REPO).as_posix() for p in (REPO / "ampo_trl").rglob("*.py")}
    recipes = {"ampo_trl/" + p.relative_to(REPO).as_posix() for p in (REPO / "recipes").rglob("*.yaml")}
    assert modules - names == set(), "modules missing from the wheel (add the package to pyproject.toml)"
    assert recipes - names == set() and "ampo_trl/recipes/demo/ampo_cpu.yaml" in names
    packaged = {name for name in names if ".dist-info/" not in name}
    assert packaged == modules | recipes
    entry_points = next(name for name in names if name.endswith(".dist-info/entry_points.txt"))
    scripts = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "ampo = ampo_trl.cli:main" in scripts and "ampo-pool = ampo_trl.cli.pool:main" in scripts


def test_the_fresh_environment_imports_the_wheel_and_its_dependencies(installed):
    venv, env, work, _ = installed
    probe = (
        "import json, importlib.metadata as md\n"
        "from packaging.requirements import Requirement\n"
        "import ampo_trl, ampo_trl.cli.recipes as r\n"
        "unmet = []\n"
        "for text in md.requires('ampo-trl'):\n"
        "    req = Requirement(text)\n"
        "    if req.marker is not None and not req.marker.evaluate({'extra': ''}):\n"
        "        continue\n"
        "    try:\n"
        "        version = md.version(req.name)\n"
        "    except md.PackageNotFoundError:\n"
        "        version = None\n"
        "    if version is None or not req.specifier.contains(version, prereleases=True):\n"
        "        unmet.append([text, version])\n"
        "print(json.dumps([ampo_trl.__file__, str(r.recipes_dir()), r.recipe_names(), unmet]))\n"
    )
    completed = _run([str(venv / "bin" / "python"), "-c", probe], cwd=work, env=env)
    module, recipes_dir, names, unmet = json.loads(completed.stdout.strip().splitlines()[-1])
    assert Path(module).is_relative_to(venv) and Path(recipes_dir).is_relative_to(venv)  # not the checkout
    recipes = REPO / "recipes"
    assert names == sorted(p.relative_to(recipes).with_suffix("").as_posix() for p in recipes.rglob("*.yaml"))
    assert unmet == []  # every dependency the wheel declares is installed at an accepted version


def test_ampo_demo_runs_from_the_installed_wheel(installed):
    venv, env, work, _ = installed
    command = [
        str(venv / "bin" / "ampo"), "demo", "--max_steps", "2", "--logging_steps", "1",
        "--per_device_train_batch_size", "16", "--demo_warmup_steps", "5", "--demo_warmup_batch_size", "8",
        "--demo_train_prompts", "32", "--demo_eval_problems", "8", "--output_dir", "demo-out",
    ]  # fmt: skip
    completed = _run(command, cwd=work, env=env)
    assert "CPU demo summary" in completed.stdout and "teachers chosen" in completed.stdout
    summary = json.loads((work / "demo-out" / "demo_summary.json").read_text())
    assert summary["steps"] == 2 and summary["guidance_trigger"] == "all_fail"
    card = (work / "demo-out" / "README.md").read_text()
    assert "ampo_trl/recipes/demo/ampo_cpu.yaml" in card and str(venv) in card  # the recipe came from the wheel
    assert "accelerate launch -m ampo_trl.cli.train --config " in card  # a command that works without a checkout


def test_every_command_prints_its_help_from_the_installed_wheel(installed):
    venv, env, work, _ = installed
    # The console scripts themselves (fast: no torch import) ...
    usage = _run([str(venv / "bin" / "ampo"), "--help"], cwd=work, env=env).stdout
    assert usage.startswith("usage: ampo <command>") and all(f"  {name} " in usage for name in COMMANDS)
    pool_usage = _run([str(venv / "bin" / "ampo-pool"), "--help"], cwd=work, env=env).stdout
    assert pool_usage.startswith("usage: ampo-pool ")
    # ... then every subcommand through the `ampo` entry point of the installed distribution, in one interpreter
    # (train, train-sft and evaluate import TRL: once instead of three times).
    probe = (
        "import contextlib, io, json, sys\n"
        "from importlib.metadata import distribution\n"
        "dist = distribution('ampo-trl')\n"
        "(entry,) = [e for e in dist.entry_points if e.group == 'console_scripts' and e.name == 'ampo']\n"
        "main = entry.load()\n"
        "helps = {}\n"
        "for command in sys.argv[1:]:\n"
        "    buffer = io.StringIO()\n"
        "    with contextlib.redirect_stdout(buffer):\n"
        "        try:\n"
        "            status = main([command, '--help'])\n"
        "        except SystemExit as exit:\n"
        "            status = exit.code\n"
        "    helps[command] = [status, buffer.getvalue()]\n"
        "print(json.dumps({'dist': str(dist.locate_file('')), 'helps': helps}))\n"
    )
    completed = _run([str(venv / "bin" / "python"), "-c", probe, *COMMANDS], cwd=work, env=env)
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    assert Path(result["dist"]).is_relative_to(venv)
    assert set(result["helps"]) == set(COMMANDS)
    for command, (status, text) in result["helps"].items():
        prog = "ampo-pool" if command == "pool" else f"ampo {command}"
        assert status in (0, None) and text.startswith(f"usage: {prog} "), (command, status, text[:300])
    assert result["helps"]["pool"][1] == pool_usage
    assert "--guidance_trigger" in result["helps"]["train"][1] and "--demo_warmup_steps" in result["helps"]["train"][1]
