"""The recipes that ship with the package, and ``--config NAME`` resolution.

The repository keeps its recipes in ``recipes/`` at the top of the checkout; the wheel maps that folder into the
package as ``ampo_trl/recipes`` (``package-dir`` in pyproject.toml), so an installed package has them too, with no
second copy in the repository. :func:`recipes_dir` finds whichever of the two exists.

``--config`` accepts, in this order:

1. a path to a YAML file that exists (relative to the working directory), as TRL's ``TrlParser`` does;
2. a shipped recipe name: its path below ``recipes/`` with or without ``.yaml`` (``demo/ampo_cpu``,
   ``qwen2.5-7b-instruct/ampo.yaml``), or the checkout path ``recipes/demo/ampo_cpu.yaml`` when run outside a
   checkout, so the commands written in the recipes and docs work from an installed wheel.

Anything else is an error that lists the shipped names. ``ampo recipes`` lists them; ``ampo recipes show NAME``
prints one (redirect it to a file to start your own recipe from it).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

RECIPE_SUFFIX = ".yaml"


def recipes_dir() -> Path:
    """The folder holding the shipped recipes: ``ampo_trl/recipes`` in an installed wheel, else ``recipes/`` of the
    checkout this package was imported from."""
    package = Path(__file__).resolve().parents[1]
    for candidate in (package / "recipes", package.parent / "recipes"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(
        f"No recipes found next to {package} (looked for {package / 'recipes'} and {package.parent / 'recipes'}). "
        "Reinstall the package (the wheel ships them as ampo_trl/recipes) or pass --config PATH/TO/RECIPE.yaml."
    )


def recipe_names() -> list[str]:
    """Names of the shipped recipes (paths below ``recipes/`` without ``.yaml``), sorted."""
    root = recipes_dir()
    return sorted(path.relative_to(root).with_suffix("").as_posix() for path in root.rglob(f"*{RECIPE_SUFFIX}"))


def resolve_recipe(name_or_path: str | os.PathLike) -> Path:
    """The YAML file ``--config`` refers to (see the module docstring for the order). Raises `FileNotFoundError`
    naming the shipped recipes when nothing matches."""
    given = Path(name_or_path)
    if given.is_file():
        return given
    name = given.as_posix()
    if name.startswith("recipes/"):
        name = name[len("recipes/") :]
    if name.endswith(RECIPE_SUFFIX):
        name = name[: -len(RECIPE_SUFFIX)]
    root = recipes_dir()
    candidate = root / f"{name}{RECIPE_SUFFIX}"
    if name and ".." not in Path(name).parts and candidate.is_file():
        return candidate
    raise FileNotFoundError(
        f"{os.fspath(name_or_path)!r} is neither a YAML file nor a shipped recipe. Shipped recipes (`ampo recipes` "
        f"lists them, `ampo recipes show NAME` prints one to start from): {', '.join(recipe_names())}."
    )


def resolve_config_argument(argv: Sequence[str]) -> list[str]:
    """``argv`` with the value of ``--config`` (``--config X`` or ``--config=X``) replaced by the file it names."""
    argv = list(argv)
    for index, argument in enumerate(argv):
        if argument == "--config" and index + 1 < len(argv):
            argv[index + 1] = str(_resolve_config(argv[index + 1]))
            break
        if argument.startswith("--config="):
            argv[index : index + 1] = ["--config", str(_resolve_config(argument.split("=", 1)[1]))]
            break
    return argv


def _resolve_config(value: str) -> Path:
    try:
        return resolve_recipe(value)
    except FileNotFoundError as error:
        raise FileNotFoundError(f"--config: {error}") from None


def main(argv: Sequence[str] | None = None) -> int:
    """``ampo recipes``: list the shipped recipes (name and first comment line), or ``show NAME``."""
    parser = argparse.ArgumentParser(
        prog="ampo recipes",
        description="The recipes that ship with ampo_trl. `ampo train --config NAME` runs one; "
        "`ampo recipes show NAME > my_recipe.yaml` starts your own from it.",
    )
    parser.add_argument("action", nargs="?", choices=["list", "show", "path"], default="list")
    parser.add_argument("name", nargs="?", help="recipe name (for show / path), e.g. qwen2.5-7b-instruct/ampo")
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    if args.action == "list":
        root = recipes_dir()
        names = recipe_names()
        width = max(len(name) for name in names)
        room = max(20, 117 - width)  # lines of at most 119 characters
        for name in names:
            title = _title(root / f"{name}{RECIPE_SUFFIX}")
            print(f"{name:<{width}}  {title if len(title) <= room else title[: room - 3] + '...'}")
        return 0
    if not args.name:
        parser.error(f"`ampo recipes {args.action}` needs a recipe name; `ampo recipes` lists them.")
    try:
        path = resolve_recipe(args.name)
    except FileNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.action == "path":
        print(path)
    else:
        print(path.read_text(encoding="utf-8"), end="")
    return 0


def _title(path: Path) -> str:
    """The first comment line of a recipe (its one-line description)."""
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("#") and line.lstrip("# ").strip():
            return line.lstrip("# ").strip()
    return ""


if __name__ == "__main__":  # `python -m ampo_trl.cli.recipes ...`
    sys.exit(main())
