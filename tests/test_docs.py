"""The documentation stays true: README commands, CI entry point, config reference, links."""

import dataclasses
import re
from pathlib import Path

from trl import GRPOConfig

from ampo_trl import AMPOConfig

ROOT = Path(__file__).resolve().parent.parent


def _first_screen_commands():
    first_screen = (ROOT / "README.md").read_text().split("\n---\n")[0]
    return re.findall(r"```bash\n(.*?)\n```", first_screen, flags=re.S)


def test_readme_first_screen_has_exactly_two_single_line_commands():
    commands = _first_screen_commands()
    assert len(commands) == 2
    assert all("\n" not in command for command in commands)
    main_job, tests = commands
    assert "scripts/train.py --config recipes/demo/ampo_cpu.yaml" in main_job
    assert tests.endswith("pytest -q")


def test_ci_runs_the_readme_test_command_verbatim():
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert _first_screen_commands()[1] in ci_lines


def test_readme_commands_point_at_existing_files():
    for command in _first_screen_commands():
        for path in re.findall(r"(?:accelerate_configs|scripts|recipes)/[\w./-]+", command):
            assert (ROOT / path).exists(), path


def test_every_ampo_field_is_documented():
    config_doc = (ROOT / "docs" / "config.md").read_text()
    inherited = {field.name for field in dataclasses.fields(GRPOConfig)}
    ampo_fields = [field for field in dataclasses.fields(AMPOConfig) if field.name not in inherited]
    assert len(ampo_fields) >= 15
    for field in ampo_fields:
        assert f"`{field.name}`" in config_doc, f"docs/config.md does not document {field.name}"
        assert field.metadata.get("help"), f"{field.name} has no help text"


def test_relative_links_in_docs_resolve():
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text()):
            assert (page.parent / target).exists(), f"{page.name} links to missing {target}"


def test_changelog_has_an_unreleased_section():
    assert "## [Unreleased]" in (ROOT / "CHANGELOG.md").read_text()


def test_readme_demo_numbers_are_the_main_sweep_table():
    """The README quotes the 5-seed main table (docs/demo/main.md, written by scripts/demo_sweep.py): means of the
    held-out hard accuracy, before and after, and AMPO's paired difference against GRPO with its interval."""
    report = (ROOT / "docs/demo/main.md").read_text()
    rows = {}
    for line in report.splitlines():  # the first table (the pass@k table below it repeats the method names)
        cells = line.strip("| ").split(" | ")
        if len(cells) > 4:
            rows.setdefault(cells[0], cells)
    methods = ("before training (warm-up)", "AMPO", "GRPO", "LUFFY-style")
    means = {name: rows[name][2].split(" ± ")[0] for name in methods}
    seeds = int(rows["AMPO"][1])
    delta = re.match(r"([+-][\d.]+) ± [\d.]+ \[([+-][\d.]+), ([+-][\d.]+)\]", rows["AMPO"][4])
    readme = " ".join((ROOT / "README.md").read_text().split("\n---\n")[0].split())
    assert f"over {seeds} seeds" in readme and seeds >= 5
    assert f"{means['before training (warm-up)']}% → **{means['AMPO']}% with AMPO**" in readme
    assert f"{means['GRPO']}% with GRPO" in readme and f"reached {means['LUFFY-style']}%" in readme
    assert f"{delta[1]} points, 95% interval [{delta[2]}, {delta[3]}]" in readme
