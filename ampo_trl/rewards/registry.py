"""Reward functions by name: the short names recipes use, and dotted import paths for custom rewards."""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Iterable
from typing import Any

from .accuracy import accuracy_reward, ampo_reward, format_reward
from .choice import multiple_choice_reward
from .released import ampo_released_reward
from .repetition import repetition_penalty_reward

REWARD_FUNCS: dict[str, Callable[..., list[float]]] = {
    "accuracy": accuracy_reward,
    "format": format_reward,
    "ampo": ampo_reward,
    "ampo_released": ampo_released_reward,
    "repetition_penalty": repetition_penalty_reward,
    "multiple_choice": multiple_choice_reward,
}


def _import_dotted(path: str) -> Any:
    """Import ``package.module:attribute`` or ``package.module.attribute`` (attribute may be dotted)."""
    if ":" in path:
        module_name, attribute_path = path.split(":", 1)
        candidates = [(module_name, attribute_path)]
    else:
        # Try the longest importable module prefix first: "a.b.c.f" -> ("a.b.c", "f"), ("a.b", "c.f"), ...
        parts = path.split(".")
        candidates = [(".".join(parts[:cut]), ".".join(parts[cut:])) for cut in range(len(parts) - 1, 0, -1)]
    errors = []
    for module_name, attribute_path in candidates:
        try:
            target = importlib.import_module(module_name)
        except ImportError as error:
            errors.append(f"{module_name}: {error}")
            continue
        try:
            for attribute in attribute_path.split("."):
                target = getattr(target, attribute)
        except AttributeError as error:
            errors.append(f"{module_name}: {error}")
            continue
        return target
    raise ValueError(f"Cannot import reward function {path!r} ({'; '.join(errors)}).")


def resolve_reward_funcs(names: Iterable[str | Callable] | str) -> list[Callable[..., list[float]]]:
    """Turn reward names into functions for ``GRPOTrainer(reward_funcs=...)``.

    ``names``: a list, or one string (comma/space separated). Each item is a short name from
    :data:`REWARD_FUNCS` (``accuracy``, ``format``, ``ampo``, ``repetition_penalty``, ``multiple_choice``;
    the function names such as ``accuracy_reward`` work too), a dotted import path ``package.module.function``
    or ``package.module:function``, or already a callable. Unknown names raise ValueError.
    """
    if isinstance(names, str):
        names = [name for name in re.split(r"[,\s]+", names) if name]
    by_function_name = {function.__name__: function for function in REWARD_FUNCS.values()}
    functions = []
    for name in names:
        if callable(name):
            functions.append(name)
            continue
        if name in REWARD_FUNCS:
            functions.append(REWARD_FUNCS[name])
        elif name in by_function_name:
            functions.append(by_function_name[name])
        elif "." in name or ":" in name:
            function = _import_dotted(name)
            if not callable(function):
                raise ValueError(f"Reward {name!r} resolved to a non-callable {type(function).__name__}.")
            functions.append(function)
        else:
            raise ValueError(
                f"Unknown reward function {name!r}. Known short names: {', '.join(sorted(REWARD_FUNCS))}. For a "
                "custom reward give a dotted import path such as 'my_package.my_module.my_reward' or "
                "'my_package.my_module:my_reward' (a function f(completions, **kwargs) -> list[float])."
            )
    return functions
