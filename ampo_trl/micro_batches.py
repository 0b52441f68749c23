r"""Length-aware micro-batches: teacher rows cost their own tokens, not a whole micro-batch of padding.

TRL cuts each process's generation batch into ``steps_per_generation`` micro-batches of ``per_device_train_batch_size``
rows, in shuffled order, and pads every micro-batch to the widest completion of the *whole generation batch*. A few
long teacher solutions then widen nearly every micro-batch: with teachers 3x longer than the sampled completions,
most of the loss pass computes padding.

`group_by_length` regroups the rows of one process's generation batch (all its micro-batches together):

1. rows are sorted by completion length (the last unmasked position + 1), ties kept in TRL's shuffled order;
2. the sorted rows are cut into the same number of micro-batches, each with the same number of rows as before;
3. every per-token field of a micro-batch is cut to that micro-batch's longest row (rounded up to
   ``pad_to_multiple_of``).

Why the loss does not change (tests/test_micro_batches.py and the trainer tests check it for every loss type):

* the cut removes only columns that are padding in every row of the micro-batch: their mask is 0, so they add
  nothing to any sum, and causal attention means no kept token ever attends to them;
* every micro-batch keeps its row count, and the normalisers do not depend on which rows share a micro-batch: AMPO's
  off-policy normalisers and TRL's ``num_items_in_batch`` (``dapo``, ``cispo``, ``vespo``) are global; ``grpo``,
  ``sapo`` and ``luspo`` average per-sequence terms over the micro-batch's rows; ``dr_grpo`` divides by rows x
  ``max_completion_length``. The exceptions are TRL's per-micro-batch statistics: ``loss_type="bnpo"`` (token mean
  of the micro-batch), the entropy bonus (token mean of the micro-batch) and ``top_entropy_quantile < 1`` (a quantile
  within the micro-batch). Their per-token weights already depend on the micro-batch composition, which TRL's shuffle
  makes random; grouping by length makes it deterministic. Use ``length_grouping="never"`` to keep TRL's exact
  composition for them;
* every process keeps ``steps_per_generation`` micro-batches, so under DeepSpeed ZeRO-3 (where every forward pass is
  a collective) every process still runs the same number of forward passes. Widths may differ between processes,
  as they already do in TRL.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

#: Per-row fields whose width is the prompt's, not the completion's (prompts are left-padded and never cut here).
PROMPT_KEYS = ("prompt_ids", "prompt_mask")


def per_token_keys(batch: dict[str, Any]) -> list[str]:
    """Keys of the per-token completion fields of a TRL batch dict: 2-D tensors as wide as ``completion_ids``."""
    completion_ids = batch["completion_ids"]
    num_rows, width = completion_ids.shape
    return [
        key
        for key, value in batch.items()
        if key not in PROMPT_KEYS
        and isinstance(value, torch.Tensor)
        and value.dim() == 2
        and value.shape == (num_rows, width)
    ]


def completion_lengths(completion_mask: torch.Tensor) -> list[int]:
    """Per row, the last unmasked completion position + 1 (0 for a row with no completion token)."""
    positions = torch.arange(1, completion_mask.size(1) + 1, device=completion_mask.device)
    return (completion_mask.bool() * positions).amax(dim=1).tolist()


def length_grouped_rows(lengths: Sequence[int], num_micro_batches: int) -> list[list[int]]:
    """Row indices of each micro-batch: rows sorted by length (ties by index), cut into equal contiguous chunks."""
    if num_micro_batches < 1 or len(lengths) % num_micro_batches:
        raise ValueError(f"{len(lengths)} rows cannot be cut into {num_micro_batches} equal micro-batches.")
    order = sorted(range(len(lengths)), key=lambda row: (lengths[row], row))
    size = len(lengths) // num_micro_batches
    return [order[start : start + size] for start in range(0, len(order), size)]


def concatenate(micro_batches: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The inverse of TRL's `split_tensor_dict`: per-row tensors and lists joined along rows; 0-dim tensors and None
    (the same in every micro-batch) kept once."""
    joined = {}
    for key, first in micro_batches[0].items():
        if first is None or (isinstance(first, torch.Tensor) and first.dim() == 0):
            joined[key] = first
        elif isinstance(first, torch.Tensor):
            joined[key] = torch.cat([batch[key] for batch in micro_batches], dim=0)
        else:
            joined[key] = [item for batch in micro_batches for item in batch[key]]
    return joined


def take_rows(batch: dict[str, Any], rows: Sequence[int], width: int | None = None) -> dict[str, Any]:
    """The given rows of every per-row field; per-token fields cut to ``width`` columns when it is given."""
    keys = set(per_token_keys(batch)) if width is not None else set()
    index = torch.tensor(list(rows), dtype=torch.long)
    taken = {}
    for key, value in batch.items():
        if value is None or (isinstance(value, torch.Tensor) and value.dim() == 0):
            taken[key] = value
        elif isinstance(value, torch.Tensor):
            value = value[index.to(value.device)]
            taken[key] = value[:, :width] if key in keys else value
        else:
            taken[key] = [value[row] for row in rows]
    return taken


def group_by_length(
    micro_batches: Sequence[dict[str, Any]], pad_to_multiple_of: int | None = None
) -> list[dict[str, Any]]:
    """Regroup a process's micro-batches by completion length and cut each to its longest row (module docstring)."""
    joined = concatenate(micro_batches)
    lengths = completion_lengths(joined["completion_mask"])
    grouped = []
    for rows in length_grouped_rows(lengths, len(micro_batches)):
        width = max(1, max(lengths[row] for row in rows))
        if pad_to_multiple_of:
            width = math.ceil(width / pad_to_multiple_of) * pad_to_multiple_of
        grouped.append(take_rows(joined, rows, min(width, joined["completion_mask"].size(1))))
    return grouped


def padding_stats(micro_batches: Sequence[dict[str, Any]]) -> tuple[int, int]:
    """(real, padded) completion tokens of a loss pass over these micro-batches: unmasked tokens, and rows x width."""
    real = sum(int(batch["completion_mask"].sum()) for batch in micro_batches)
    padded = sum(batch["completion_mask"].numel() for batch in micro_batches)
    return real, padded
