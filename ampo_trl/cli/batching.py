"""TRL 1.16's generation-batch arithmetic (`BatchPlan`), with errors that say which numbers to change.

Several machines change nothing in the arithmetic: TRL counts *processes* (``WORLD_SIZE``, which accelerate and
torchrun set to machines x processes per machine), so two nodes of 8 GPUs are 16 processes. The machine count is
carried along (``num_machines``, from ``--num_machines`` or the launcher's environment) only so that the layout and
the errors say how the processes are spread, e.g. ``processes (16 = 2 machines x 8)``.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from trl import GRPOConfig


@dataclass(frozen=True)
class BatchPlan:
    """TRL's batch arithmetic for one run (all counts are completions unless named prompts)."""

    num_processes: int
    per_device_train_batch_size: int
    gradient_accumulation_steps: int
    num_generations: int
    generation_batch_size: int  # completions sampled per generation round (global)
    steps_per_generation: int  # micro-batches (per process) the generation batch is cut into
    num_machines: int = 1  # machines the processes are spread over (num_processes counts all of them)

    @property
    def processes_per_machine(self) -> int:
        return self.num_processes // self.num_machines

    @property
    def prompts_per_generation(self) -> int:
        return self.generation_batch_size // self.num_generations

    @property
    def completions_per_optimizer_step(self) -> int:
        return self.per_device_train_batch_size * self.num_processes * self.gradient_accumulation_steps

    @property
    def optimizer_steps_per_generation(self) -> float:
        return self.steps_per_generation / self.gradient_accumulation_steps

    def describe(self) -> str:
        return (
            f"{self.prompts_per_generation} prompts x {self.num_generations} completions = "
            f"{self.generation_batch_size} completions per generation round on "
            f"{_processes_text(self.num_processes, self.num_machines)}; "
            f"{self.completions_per_optimizer_step} completions per optimizer step "
            f"({self.per_device_train_batch_size} per device x {self.num_processes} processes x "
            f"{self.gradient_accumulation_steps} accumulation steps); "
            f"{self.optimizer_steps_per_generation:g} optimizer step(s) per generation round"
        )


def batch_plan(
    per_device_train_batch_size: int,
    num_processes: int,
    gradient_accumulation_steps: int,
    num_generations: int,
    steps_per_generation: int | None = None,
    generation_batch_size: int | None = None,
    num_machines: int = 1,
) -> BatchPlan:
    """TRL 1.16's generation-batch arithmetic, with errors that say which numbers to change.

    ``num_processes`` counts the processes of *all* machines (``WORLD_SIZE``; accelerate's ``--num_processes``);
    ``num_machines`` only tells how they are spread (it must divide ``num_processes``).
    ``generation_batch_size`` defaults to ``per_device_train_batch_size * num_processes * steps_per_generation`` and
    ``steps_per_generation`` to ``gradient_accumulation_steps`` (as in `GRPOConfig`). The generation batch must hold
    whole groups of ``num_generations`` completions and split evenly into per-process micro-batches.
    """
    for name, value in (
        ("per_device_train_batch_size", per_device_train_batch_size),
        ("num_processes", num_processes),
        ("gradient_accumulation_steps", gradient_accumulation_steps),
        ("num_generations", num_generations),
        ("num_machines", num_machines),
    ):
        if value is None or value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}.")
    if num_processes % num_machines:
        raise ValueError(
            f"num_processes ({num_processes}) counts the processes of all machines and must be a multiple of "
            f"num_machines ({num_machines}): with accelerate, --num_processes is the total, e.g. 16 for 2 machines "
            "of 8 GPUs."
        )
    processes = _processes_text(num_processes, num_machines, short=True)
    if num_generations < 2:
        raise ValueError(
            f"num_generations must be >= 2 (GRPO compares completions of a group), got {num_generations}."
        )
    global_micro_batch = per_device_train_batch_size * num_processes
    if generation_batch_size is not None and steps_per_generation is not None:
        raise ValueError(
            "Set either generation_batch_size or steps_per_generation, not both "
            f"(got {generation_batch_size} and {steps_per_generation})."
        )
    if generation_batch_size is None:
        steps = steps_per_generation if steps_per_generation is not None else gradient_accumulation_steps
        generation_batch_size = global_micro_batch * steps
        origin = (
            f"per_device_train_batch_size ({per_device_train_batch_size}) x {processes} x "
            f"{'steps_per_generation' if steps_per_generation is not None else 'gradient_accumulation_steps'} "
            f"({steps}) = {generation_batch_size}"
        )
    else:
        if generation_batch_size % global_micro_batch:
            raise ValueError(
                f"generation_batch_size ({generation_batch_size}) must be a multiple of per_device_train_batch_size "
                f"({per_device_train_batch_size}) x {processes} = {global_micro_batch}, so that it "
                "splits into whole micro-batches. Change generation_batch_size or per_device_train_batch_size."
            )
        steps = generation_batch_size // global_micro_batch
        origin = f"generation_batch_size = {generation_batch_size}"
    if generation_batch_size % num_generations:
        prompts = generation_batch_size / num_generations
        raise ValueError(
            f"The generation batch cannot form whole groups: {origin} completions is not a multiple of "
            f"num_generations ({num_generations}) ({prompts:g} prompts). Every prompt needs all its "
            f"{num_generations} completions in the same generation batch. Make the generation batch a multiple of "
            f"{num_generations}, e.g. per_device_train_batch_size = "
            f"{_round_up_to(per_device_train_batch_size, num_generations)}, or change num_generations."
        )
    return BatchPlan(
        num_processes=num_processes,
        per_device_train_batch_size=per_device_train_batch_size,
        gradient_accumulation_steps=gradient_accumulation_steps,
        num_generations=num_generations,
        generation_batch_size=generation_batch_size,
        steps_per_generation=steps,
        num_machines=num_machines,
    )


def _processes_text(num_processes: int, num_machines: int, short: bool = False) -> str:
    """``processes (16 = 2 machines x 8)`` (``short``) or ``16 processes (2 machines x 8)``."""
    if short:
        if num_machines == 1:
            return f"processes ({num_processes})"
        return f"processes ({num_processes} = {num_machines} machines x {num_processes // num_machines})"
    if num_machines == 1:
        return f"{num_processes} process(es)"
    return f"{num_processes} processes ({num_machines} machines x {num_processes // num_machines})"


def _round_up_to(value: int, multiple: int) -> int:
    return int(math.ceil(value / multiple) * multiple)


def plan_from_config(
    training_args: GRPOConfig, num_processes: int | None = None, num_machines: int | None = None
) -> BatchPlan:
    """The `BatchPlan` of a config parsed in this launch (``num_processes``: default ``WORLD_SIZE``, all machines
    together; ``num_machines``: default from the launcher's environment, see :func:`num_machines_from_env`).

    `GRPOConfig` derives ``generation_batch_size`` / ``steps_per_generation`` for the process count it was parsed
    in, so this is only meaningful in the same launch. For another process count use :func:`plan_from_mapping` on
    the raw recipe values.
    """
    return batch_plan(
        per_device_train_batch_size=training_args.per_device_train_batch_size,
        num_processes=num_processes or num_processes_from_env(),
        gradient_accumulation_steps=training_args.gradient_accumulation_steps,
        num_generations=training_args.num_generations,
        generation_batch_size=training_args.generation_batch_size,
        num_machines=num_machines or (num_machines_from_env() if num_processes is None else 1),
    )


def plan_from_mapping(values: dict, num_processes: int, num_machines: int = 1) -> BatchPlan:
    """The `BatchPlan` of raw recipe values (a YAML mapping) on ``num_processes`` processes in total over
    ``num_machines`` machines, with TRL's defaults (``per_device_train_batch_size`` 8,
    ``gradient_accumulation_steps`` 1, ``num_generations`` 8)."""
    return batch_plan(
        num_machines=num_machines,
        per_device_train_batch_size=int(values.get("per_device_train_batch_size", 8)),
        num_processes=num_processes,
        gradient_accumulation_steps=int(values.get("gradient_accumulation_steps", 1)),
        num_generations=int(values.get("num_generations", 8)),
        steps_per_generation=values.get("steps_per_generation"),
        generation_batch_size=values.get("generation_batch_size"),
    )


def num_processes_from_env() -> int:
    """Number of training processes of this launch, all machines together (``WORLD_SIZE`` set by accelerate /
    torchrun), else 1."""
    return _env_int("WORLD_SIZE") or 1


def num_machines_from_env() -> int:
    """Number of machines of this launch: ``GROUP_WORLD_SIZE`` (torchrun, hence accelerate's multi-GPU launcher),
    else ``WORLD_SIZE / LOCAL_WORLD_SIZE``, else 1. Only used to describe the layout."""
    world_size = num_processes_from_env()
    machines = _env_int("GROUP_WORLD_SIZE")
    if machines is None:
        local = _env_int("LOCAL_WORLD_SIZE")
        machines = world_size // local if local and world_size % local == 0 else 1
    return machines if machines >= 1 and world_size % machines == 0 else 1


def _env_int(name: str) -> int | None:
    try:
        value = int(os.environ[name])
    except (KeyError, ValueError):
        return None
    return value if value >= 1 else None
