"""A CPU stand-in for TRL's vLLM engine, faithful to what vLLM does for the requests AMPO makes.

vLLM cannot run without a GPU, so the tests replace TRL's `VLLMGeneration` with `StandInVLLMGeneration`. Each part
imitates one documented behaviour of vLLM 0.22-0.31 (the versions TRL 1.16 supports) or of TRL's client; the note in
each docstring says which. Log-probs come from the policy itself, as an engine holding the synced weights would.

* Prompt log-probs are a plain log-softmax of the *raw* logits: the request's temperature is ignored
  (vLLM ``gpu_model_runner._get_prompt_logprobs_dict``: prompt tokens skip the sampling processors).
* Position 0 has no log-prob (``None``); each later position holds the actual token plus the top-k, the actual one
  always (``Sampler.gather_logprobs``).
* The server clamps ``-inf`` to ``-9999.0`` for JSON (``clamp_prompt_logprobs``); the offline engine does not.
* A sequence longer than ``max_model_len - 1`` fails the whole request: HTTP 400 from the server
  ("This model's maximum context length is ..."), an exception from ``LLM.generate``.
* TRL's ``VLLMClient`` exists on the main process only (server mode), sends one request per ``chunk_size`` sequences
  (``chunk_size=0``: one request), raises ``Exception("Request failed: <code>, <body>")`` on any non-200 answer, and
  returns four keys (``logprobs``, ``logprob_token_ids``, ``actual_logprobs``, ``actual_token_ids``).
* Colocate mode keeps an ``LLM`` on every process; with sleep mode the engine sleeps between generations and must be
  woken (``sync_weights``, ``wake_up``) before use.
"""

import json
import math
from dataclasses import dataclass
from types import SimpleNamespace

import torch


@torch.no_grad()
def raw_prompt_logprobs(model, sequence: list[int], top: int) -> list[dict | None]:
    """vLLM's prompt log-probs of one sequence: None, then {token_id: (logprob, rank)} with the actual token first."""
    logits = model(input_ids=torch.tensor([sequence])).logits[0].float()
    logps = logits.log_softmax(-1)  # raw logits: no temperature
    positions: list[dict | None] = [None]
    for p in range(1, len(sequence)):
        row = logps[p - 1]
        actual = sequence[p]
        entries = {actual: (row[actual].item(), int((row > row[actual]).sum()) + 1)}
        if top > 0:
            values, indices = row.topk(top)
            for rank, (value, index) in enumerate(zip(values.tolist(), indices.tolist()), start=1):
                entries.setdefault(index, (value, rank))
        positions.append(entries)
    return positions


def too_long_message(length: int, max_model_len: int) -> str:
    return (
        f"This model's maximum context length is {max_model_len} tokens. However, you requested 1 output tokens and "
        f"your prompt contains {length} input tokens, for a total of {length + 1} tokens. Please reduce the length of "
        f"the input prompt or the number of requested output tokens. (parameter=input_tokens, value={length})"
    )


class StandInClient:
    """TRL's `VLLMClient` talking to `vllm serve`: `get_sequence_logprobs` and `GET /v1/models`."""

    def __init__(self, model, max_model_len: int | None = None, report_max_model_len: bool = True):
        self.model, self.max_model_len = model, max_model_len
        self.base_url = "http://stand-in:8000"
        self.requests: list[int] = []  # sequences per HTTP request
        self.fail_with: str | None = None  # e.g. "500, Internal Server Error": every request fails with it
        models = {"data": [{"id": "stand-in", **({"max_model_len": max_model_len} if report_max_model_len else {})}]}
        self.session = SimpleNamespace(get=lambda url: SimpleNamespace(status_code=200, json=lambda: models))

    def get_server_info(self):
        """Dev-mode `/server_info`: TRL checks the log-prob mode of generated tokens at start-up."""
        return {"model_config": {"logprobs_mode": "processed_logprobs", "max_model_len": self.max_model_len}}

    def get_sequence_logprobs(
        self, sequences, prompt_lengths, top_logprobs=100, temperature=1.0, chunk_size=0, max_concurrent_requests=4
    ):
        chunk_size = chunk_size if chunk_size > 0 else len(sequences)
        results = []
        for start in range(0, len(sequences), chunk_size):
            chunk = sequences[start : start + chunk_size]
            self.requests.append(len(chunk))
            if self.fail_with is not None:
                raise Exception(f"Request failed: {self.fail_with}")
            for sequence in chunk:
                if self.max_model_len is not None and len(sequence) > self.max_model_len - 1:
                    body = {"error": {"message": too_long_message(len(sequence), self.max_model_len), "code": 400}}
                    raise Exception(f"Request failed: 400, {json.dumps(body)}")
            for sequence, prompt_length in zip(chunk, prompt_lengths[start : start + chunk_size]):
                positions = raw_prompt_logprobs(self.model, sequence, top_logprobs)
                results.append(self._format(positions, sequence, prompt_length, top_logprobs))
        return {key: [result[key] for result in results] for key in results[0]}

    @staticmethod
    def _format(positions, sequence, prompt_length, top_logprobs):
        """JSON round trip of vLLM's server (-inf sent as -9999.0), then TRL's `_format_sequence_logprobs`."""
        out = {"logprobs": [], "logprob_token_ids": [], "actual_logprobs": [], "actual_token_ids": []}
        for p in range(prompt_length, len(sequence)):
            entries = {str(t): {"logprob": max(lp, -9999.0), "rank": r} for t, (lp, r) in (positions[p] or {}).items()}
            items = sorted(entries.items(), key=lambda item: item[1]["rank"])[:top_logprobs]
            out["logprobs"].append([v["logprob"] for _, v in items] + [-math.inf] * (top_logprobs - len(items)))
            out["logprob_token_ids"].append([int(t) for t, _ in items] + [0] * (top_logprobs - len(items)))
            actual = entries.get(str(sequence[p]))
            out["actual_logprobs"].append([-math.inf if actual is None else actual["logprob"]])
            out["actual_token_ids"].append([sequence[p]])
        return out


@dataclass
class StandInSamplingParams:
    """`vllm.SamplingParams`, the fields AMPO sets."""

    max_tokens: int = 16
    temperature: float = 1.0
    prompt_logprobs: int | None = None


@dataclass
class StandInLogprob:
    """`vllm.logprobs.Logprob`."""

    logprob: float
    rank: int | None = None
    decoded_token: str | None = None


class StandInLLM:
    """`vllm.LLM` as TRL builds it in colocate mode: `generate` with prompt log-probs, sleep and wake-up."""

    def __init__(self, model, max_model_len: int = 4096):
        self.model = model
        self.llm_engine = SimpleNamespace(model_config=SimpleNamespace(max_model_len=max_model_len))
        self.generate_calls: list[int] = []
        self.events: list[str] = []

    def generate(self, prompts, sampling_params, use_tqdm=False):
        self.generate_calls.append(len(prompts))
        limit = self.llm_engine.model_config.max_model_len
        for prompt in prompts:
            if len(prompt["prompt_token_ids"]) > limit - 1:
                raise ValueError(too_long_message(len(prompt["prompt_token_ids"]), limit))
        outputs = []
        for prompt in prompts:
            positions = raw_prompt_logprobs(self.model, prompt["prompt_token_ids"], sampling_params.prompt_logprobs)
            outputs.append(
                SimpleNamespace(
                    prompt_logprobs=[
                        None if entries is None else {t: StandInLogprob(lp, r) for t, (lp, r) in entries.items()}
                        for entries in positions
                    ]
                )
            )
        return outputs

    def sleep(self, level=1):
        self.events.append(f"sleep({level})")

    def wake_up(self, tags=None):
        self.events.append(f"wake_up({tags})")


class StandInVLLMGeneration:
    """TRL's `VLLMGeneration`: the client only on the main process (server mode), an engine on every process
    (colocate). Generation returns wrong-answer completions whose sampler log-probs are the policy's own minus 0.05,
    so the importance-sampling ratio of on-policy tokens is exp(0.05)."""

    instances: list = []
    server_options: dict = {}
    engine_options: dict = {}

    def __init__(self, model, accelerator, mode, processing_class, enable_sleep_mode=False, **kwargs):
        self.model, self.tokenizer, self.mode = model, processing_class, mode
        self.enable_sleep_mode, self._llm_weights_sleeping = enable_sleep_mode, enable_sleep_mode
        self.tensor_parallel_size = kwargs.get("tensor_parallel_size", 1)
        self.weight_syncs = 0
        if mode == "server" and accelerator.is_main_process:
            self.vllm_client = StandInClient(model, **self.server_options)
        if mode == "colocate":
            self.llm = StandInLLM(model, **self.engine_options)
        self.generator = torch.Generator().manual_seed(0)
        StandInVLLMGeneration.instances.append(self)

    def sync_weights(self):
        self.weight_syncs += 1
        self._llm_weights_sleeping = False

    @torch.no_grad()
    def generate(self, prompts, images, num_generations, profiler):
        digits = self.tokenizer("0123456789", add_special_tokens=False)["input_ids"]
        completions, logprobs = [], []
        for prompt in prompts:
            length = int(torch.randint(2, 7, (1,), generator=self.generator))
            tokens = [digits[int(i)] for i in torch.randint(0, 10, (length,), generator=self.generator)]
            tokens.append(self.tokenizer.eos_token_id)
            logits = self.model(input_ids=torch.tensor([list(prompt) + tokens])).logits[0].float()
            logps = logits.log_softmax(-1)
            start = len(prompt)
            logprobs.append([[logps[start + i - 1, t].item() - 0.05] for i, t in enumerate(tokens)])
            completions.append(tokens)
        if self.enable_sleep_mode:
            self._llm_weights_sleeping = True  # TRL puts the engine back to sleep after generating
        return prompts, completions, logprobs, None


def install(monkeypatch, server_options=None, engine_options=None):
    """Replace TRL's vLLM generation and the `vllm` package with the stand-ins for one test."""
    import sys

    import trl.trainer.grpo_trainer as grpo_module

    StandInVLLMGeneration.instances = []
    StandInVLLMGeneration.server_options = dict(server_options or {})
    StandInVLLMGeneration.engine_options = dict(engine_options or {})
    monkeypatch.setattr(grpo_module, "VLLMGeneration", StandInVLLMGeneration)
    monkeypatch.setitem(sys.modules, "vllm", SimpleNamespace(SamplingParams=StandInSamplingParams))
    return StandInVLLMGeneration
