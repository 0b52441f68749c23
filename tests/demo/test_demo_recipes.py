"""The CPU demo's recipes compare like with like: every baseline is recipes/demo/ampo_cpu.yaml with only its own
switches changed (same warm-up, data, seed, steps, learning rate and batch)."""

from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "recipes/demo"

# What each demo recipe changes relative to ampo_cpu.yaml (besides output_dir).
DIFFERENCES = {
    "grpo_cpu.yaml": {"guidance_trigger": "never"},
    "luffy_cpu.yaml": {"guidance_trigger": "every_group", "num_replacements": 1, "off_policy_aggregation": "token"},
    "sft_cpu.yaml": {"demo_sft": True},
}


def _values(name: str) -> dict:
    return yaml.safe_load((DEMO / name).read_text())


def test_every_demo_recipe_is_covered():
    assert {path.name for path in DEMO.glob("*.yaml")} == {"ampo_cpu.yaml", *DIFFERENCES}


@pytest.mark.parametrize("name", sorted(DIFFERENCES))
def test_demo_baselines_change_only_their_own_switches(name):
    ampo, other = _values("ampo_cpu.yaml"), _values(name)
    changed = {key for key in set(ampo) | set(other) if ampo.get(key) != other.get(key)} - {"output_dir"}
    assert changed == set(DIFFERENCES[name]), f"{name} differs from ampo_cpu.yaml in {sorted(changed)}"
    for key, value in DIFFERENCES[name].items():
        assert other[key] == value
    assert other["output_dir"] != ampo["output_dir"]
    assert f"--config recipes/demo/{name}" in (DEMO / name).read_text()  # the launch line in the header


def test_ampo_demo_uses_the_paper_defaults():
    ampo = _values("ampo_cpu.yaml")
    assert ampo["guidance_trigger"] == "all_fail" and ampo["num_replacements"] == 2
    assert ampo["guidance_selection"] == "comprehension" and "off_policy_aggregation" not in ampo  # default: sequence
