r"""Comprehension scores from TRL's vLLM engine: the log-probs of the gold-answer tokens of each scoring sequence,
read from vLLM's *prompt log-probs* (a no-generation request), on the server (``vllm_mode="server"``) or on the
engine colocated with the trainer (``vllm_mode="colocate"``).

What vLLM does (versions 0.22-0.31, the range TRL 1.16 supports), and how this module relies on it:

* Prompt log-probs are a plain log-softmax of the *raw* logits: no temperature, no top-k/top-p, whatever the
  request says (prompt tokens skip the sampling processors; TRL's ``--logprobs-mode processed_logprobs`` changes only
  generated tokens). Comprehension scores are therefore defined at temperature 1 on every backend: the trainer backend
  computes raw log-probs too (`AMPOTrainer._scoring_forward`).
* Position 0 of a sequence has no log-prob; the actual token's log-prob is always returned, even outside the top-k,
  so ``prompt_logprobs=0`` (the actual token only) suffices.
* A sequence of L tokens is refused when L > ``max_model_len`` - 1 (one output token is requested): HTTP 400 from the
  server, an exception from ``LLM.generate``; the whole request fails with it. `fits` lets callers skip such
  sequences before asking. The server reports ``max_model_len`` at ``GET /v1/models``.
* The server sends ``-inf`` as ``-9999.0`` (JSON has no infinity); `gold_logprobs_from_server` maps it back.

The server is asked through TRL's ``VLLMClient.get_sequence_logprobs``, in chunks of ``chunk_size`` sequences with
at most ``max_concurrent_requests`` requests in flight. The engine is asked with ``LLM.generate`` in chunks too.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from .comprehension import ScoringSequence

#: What the vLLM server sends for a log-prob of -inf.
SERVER_NEGATIVE_INFINITY = -9999.0


def fits(length: int, max_model_len: int | None) -> bool:
    """Whether vLLM accepts a scoring request for a sequence of ``length`` tokens (one output token requested)."""
    return max_model_len is None or length <= max_model_len - 1


def server_max_model_len(client: Any) -> int | None:
    """``max_model_len`` of the served model (``GET /v1/models``), or None when the server does not report it."""
    response = client.session.get(f"{client.base_url}/v1/models")
    if response.status_code != 200:
        return None
    value = response.json().get("data", [{}])[0].get("max_model_len")
    return int(value) if value is not None else None


def _finite(logprob: float) -> float:
    return -math.inf if logprob <= SERVER_NEGATIVE_INFINITY else float(logprob)


def gold_logprobs_from_server(
    client: Any, sequences: Sequence[ScoringSequence], chunk_size: int, max_concurrent_requests: int
) -> list[list[float]]:
    """Per sequence, the log-probs of its gold-answer tokens, from the vLLM server (raises on any request failure)."""
    if not sequences:
        return []
    result = client.get_sequence_logprobs(
        sequences=[list(s.input_ids) for s in sequences],
        prompt_lengths=[s.answer_start for s in sequences],
        top_logprobs=0,  # the actual token is always returned besides the top-k
        temperature=1.0,  # documents the semantics: vLLM ignores it for prompt log-probs
        chunk_size=chunk_size,
        max_concurrent_requests=max_concurrent_requests,
    )
    gold = []
    for sequence, positions in zip(sequences, result["actual_logprobs"], strict=True):
        span = positions[: sequence.answer_end - sequence.answer_start]
        gold.append([_finite(position[0]) for position in span])
    return gold


def gold_logprobs_from_engine(llm: Any, sequences: Sequence[ScoringSequence], chunk_size: int) -> list[list[float]]:
    """Per sequence, the log-probs of its gold-answer tokens, from an in-process ``vllm.LLM`` (colocate mode)."""
    from vllm import SamplingParams

    params = SamplingParams(max_tokens=1, temperature=1.0, prompt_logprobs=0)
    gold = []
    for start in range(0, len(sequences), max(1, chunk_size)):
        chunk = sequences[start : start + max(1, chunk_size)]
        outputs = llm.generate(
            [{"prompt_token_ids": list(s.input_ids)} for s in chunk], sampling_params=params, use_tqdm=False
        )
        for sequence, output in zip(chunk, outputs, strict=True):
            positions = output.prompt_logprobs
            gold.append(
                [
                    _finite(positions[p][sequence.input_ids[p]].logprob)
                    for p in range(sequence.answer_start, sequence.answer_end)
                ]
            )
    return gold
