"""Sampling n responses per prompt with Hugging Face transformers or vLLM: the one implementation of each backend.

Used by the evaluation (:mod:`ampo_trl.evaluation`: ``scripts/evaluate.py``, ``AMPOEvalCallback``) and by the pool
builder (:mod:`ampo_trl.pool.builder`: ``scripts/build_pool.py``, ``ampo-pool build``), which add their own prompts,
scoring and storage on top.

A backend takes :class:`GenerationRequest` s (prompt token ids with the chat template already applied, the number
of samples, an optional seed) and :class:`SamplingSettings`, and returns one list of :class:`Generation` s per
request, in request order. Both backends follow the same rules:

* **Prompts** are token ids rendered by :func:`render_prompt_ids`: the tokenizer's chat template (with optional
  ``chat_template_kwargs``, e.g. Qwen3's ``enable_thinking``) to text, then tokenized *without* special tokens, so
  a template that writes its own BOS does not get a second one.
* **Sampling**: only ``temperature`` / ``top_p`` (and ``top_k`` when set) shape the distribution; ``top_k`` is
  otherwise off and ``repetition_penalty`` is 1, whatever the checkpoint's ``generation_config`` says.
  ``temperature=0`` is greedy.
* **End of a response**: the first EOS (the model's ``generation_config`` ids and the tokenizer's) *or pad token*
  ends it (a sampled pad ends the response like an EOS); ``num_tokens`` counts that final token;
  ``finish_reason`` is ``"stop"``, or ``"length"`` when ``max_new_tokens`` was reached first.
* **Seeds**, two modes:

  - *per request* (``GenerationRequest.seed`` set; the pool builder uses :func:`derive_seed` of the question id):
    a request's samples depend only on its prompt, its seed and the settings, not on the other requests, their
    order or how the caller chunks them. transformers then generates each request in its own ``generate`` calls
    (``batch_size`` copies of one prompt at a time); vLLM gets ``SamplingParams(seed=...)``.
  - *per call* (``seed=None``, the evaluation's default): transformers batches the samples of all such requests
    together (longest prompts first, left padding) under one seed, ``SamplingSettings.seed``, for the whole call,
    which is faster when requests have few samples but reproducible only for the same requests and
    ``batch_size``; vLLM uses the engine's seed.
"""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = [
    "DEFAULT_MAX_NEW_TOKENS",
    "DEFAULT_TEMPERATURE",
    "DEFAULT_TOP_P",
    "Generation",
    "GenerationRequest",
    "SamplingSettings",
    "TransformersBackend",
    "VLLMBackend",
    "derive_seed",
    "eos_token_ids",
    "make_backend",
    "prompt_token_ids",
    "render_prompt",
    "render_prompt_ids",
]

# The AMPO paper's evaluation protocol (temperature 0.6, top_p 1.0, 8192 new tokens): the defaults of
# SamplingSettings.
DEFAULT_TEMPERATURE = 0.6
DEFAULT_TOP_P = 1.0
DEFAULT_MAX_NEW_TOKENS = 8192

VLLM_INSTALL_HINT = (
    "The vLLM backend needs the `vllm` package and a GPU: `pip install 'ampo-trl[vllm]'`, or use "
    "--backend transformers."
)


# ----------------------------------------------------------------------------------------------------------
# Requests, settings, results
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SamplingSettings:
    """How to sample. ``seed`` seeds the per-call mode (requests without their own seed); ``top_k=None`` is off."""

    temperature: float = DEFAULT_TEMPERATURE
    top_p: float = DEFAULT_TOP_P
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    seed: int = 0
    top_k: int | None = None


@dataclass
class GenerationRequest:
    """One prompt (token ids, chat template applied), how many samples to draw for it, and optionally its own seed
    (see the module docstring: per-request vs per-call seeding)."""

    prompt_ids: list[int]
    num_samples: int = 1
    seed: int | None = None


@dataclass
class Generation:
    """One sampled response: its text (special tokens removed), generated tokens (the final EOS included) and
    ``finish_reason`` (``"stop"``: ended with EOS; ``"length"``: hit ``max_new_tokens``). Both are None only when
    a custom generator does not report them (the pool builder accepts that)."""

    text: str
    num_tokens: int | None = None
    finish_reason: str | None = None


def derive_seed(seed: int, key: Any) -> int:
    """A seed for one request from a base seed and a stable key (a string, or an object with an ``id``, such as a
    pool-builder ``Question``): samples then do not depend on how requests are chunked or ordered."""
    key = getattr(key, "id", key)
    return int(hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()[:8], 16)


# ----------------------------------------------------------------------------------------------------------
# Prompts
# ----------------------------------------------------------------------------------------------------------


def render_prompt(
    tokenizer, messages: Sequence[Mapping[str, str]], chat_template_kwargs: Mapping | None = None
) -> str:
    """The chat messages as prompt text: the tokenizer's chat template with the generation prompt appended."""
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(
            f"The tokenizer {getattr(tokenizer, 'name_or_path', '')!r} has no chat template, and the prompts are chat "
            "messages. Use an instruct/chat checkpoint, or a tokenizer with a chat template (--tokenizer)."
        )
    return tokenizer.apply_chat_template(
        list(messages), tokenize=False, add_generation_prompt=True, **dict(chat_template_kwargs or {})
    )


def prompt_token_ids(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    """Token ids of a rendered prompt, without special tokens: the template already wrote any BOS."""
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def render_prompt_ids(
    tokenizer, messages: Sequence[Mapping[str, str]], chat_template_kwargs: Mapping | None = None
) -> list[int]:
    """:func:`render_prompt` then :func:`prompt_token_ids`."""
    return prompt_token_ids(tokenizer, render_prompt(tokenizer, messages, chat_template_kwargs))


# ----------------------------------------------------------------------------------------------------------
# transformers
# ----------------------------------------------------------------------------------------------------------


def eos_token_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """EOS ids of the model's ``generation_config`` then the tokenizer's, without repeats."""
    ids: list[int] = []
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for value in (configured, getattr(tokenizer, "eos_token_id", None)):
        if value is None:
            continue
        for item in value if isinstance(value, (list, tuple)) else [value]:
            if item is not None and int(item) not in ids:
                ids.append(int(item))
    if not ids:
        raise ValueError("Neither the model's generation_config nor the tokenizer defines an EOS token id.")
    return ids


def _release_memory() -> None:
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:  # pragma: no cover
        pass


class TransformersBackend:
    """Batched ``model.generate`` (CPU or GPU), left-padded, with the sampling rules of the module docstring.

    ``model``: a path / hub id (loaded with ``AutoModelForCausalLM``, ``model_kwargs`` passed to ``from_pretrained``)
    or a model object; ``tokenizer``: a tokenizer or a path (default: the model's). ``device``: default cuda when
    available, else cpu; ``dtype``: ``None``/``"auto"`` = bfloat16 on GPU, float32 on CPU, or a torch dtype (name).
    At most ``batch_size`` sequences go into one ``generate`` call. ``synced_gpus`` must be True when several
    processes generate with a sharded model (DeepSpeed ZeRO-3, FSDP), so that they run forwards in lockstep; every
    process must then make the same number of calls (per-call seeding and equal request lists do).
    """

    name = "transformers"

    def __init__(
        self,
        model: Any,
        tokenizer: Any = None,
        *,
        batch_size: int = 8,
        device: str | None = None,
        dtype: Any = None,
        synced_gpus: bool = False,
        progress: bool = True,
        trust_remote_code: bool = False,
        model_kwargs: Mapping[str, Any] | None = None,
    ):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        self.model_name = model if isinstance(model, (str, os.PathLike)) else getattr(model, "name_or_path", "")
        if isinstance(tokenizer, (str, os.PathLike)) or tokenizer is None:
            tokenizer_source = tokenizer or (model if isinstance(model, (str, os.PathLike)) else None)
            if tokenizer_source is None:
                raise ValueError("Pass the tokenizer when the model is an object.")
            tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_source), trust_remote_code=trust_remote_code)
        self.tokenizer = tokenizer
        if isinstance(model, (str, os.PathLike)):
            kwargs = {"trust_remote_code": trust_remote_code, **(model_kwargs or {})}
            dtype = dtype if dtype is not None else kwargs.pop("dtype", None)
            device = device or ("cuda" if torch.cuda.is_available() else "cpu")
            if dtype in (None, "auto"):
                kwargs["dtype"] = torch.bfloat16 if str(device).startswith("cuda") else torch.float32
            else:
                kwargs["dtype"] = getattr(torch, dtype) if isinstance(dtype, str) else dtype
            model = AutoModelForCausalLM.from_pretrained(str(model), **kwargs)
            model.to(device)
            model.eval()
        self.model = model
        self.batch_size = batch_size
        self.synced_gpus = synced_gpus
        self.progress = progress
        self.eos_ids = eos_token_ids(model, tokenizer)
        pad = getattr(tokenizer, "pad_token_id", None)
        self.pad_id = int(pad) if pad is not None else self.eos_ids[0]

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "batch_size": self.batch_size,
            "device": str(getattr(self.model, "device", "")),
            "dtype": str(getattr(self.model, "dtype", "")),
        }

    def generate(self, requests: Sequence[GenerationRequest], settings: SamplingSettings) -> list[list[Generation]]:
        import torch

        results: list[list[Generation | None]] = [[None] * request.num_samples for request in requests]
        # Longest prompts first: similar lengths share a batch (less padding) and memory peaks early.
        unseeded = sorted(
            ((r, s) for r, request in enumerate(requests) if request.seed is None for s in range(request.num_samples)),
            key=lambda item: -len(requests[item[0]].prompt_ids),
        )
        # One RNG run per seed: all unseeded samples under settings.seed, then each seeded request on its own.
        runs = [(settings.seed, unseeded)] + [
            (request.seed, [(r, s) for s in range(request.num_samples)])
            for r, request in enumerate(requests)
            if request.seed is not None
        ]
        size = self.batch_size
        runs = [(seed, [items[i : i + size] for i in range(0, len(items), size)]) for seed, items in runs if items]
        total = sum(len(batches) for _, batches in runs)
        bar = None
        if self.progress and total > 1:
            from tqdm.auto import tqdm

            bar = tqdm(total=total, desc="generate", unit="batch")
        device = self.model.device
        devices = [device] if device.type == "cuda" else []
        try:
            for seed, batches in runs:
                with torch.random.fork_rng(devices=devices), torch.no_grad():
                    torch.manual_seed(seed)
                    if devices:
                        torch.cuda.manual_seed(seed)
                    for batch in batches:
                        completions = self._generate_batch([requests[r].prompt_ids for r, _ in batch], settings)
                        for (r, s), tokens in zip(batch, completions):
                            results[r][s] = self._to_generation(tokens)
                        if bar is not None:
                            bar.update(1)
        finally:
            if bar is not None:
                bar.close()
        return results  # type: ignore[return-value]

    def _generate_batch(self, prompts: list[list[int]], settings: SamplingSettings) -> list[list[int]]:
        import torch

        width = max(len(prompt) for prompt in prompts)
        input_ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, prompt in enumerate(prompts):
            if prompt:
                input_ids[row, width - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
                attention_mask[row, width - len(prompt) :] = 1
        sampling = settings.temperature > 0
        kwargs: dict[str, Any] = dict(
            do_sample=sampling,
            max_new_tokens=settings.max_new_tokens,
            eos_token_id=self.eos_ids,
            pad_token_id=self.pad_id,
            num_beams=1,
            repetition_penalty=1.0,
            use_cache=True,
            synced_gpus=self.synced_gpus,
        )
        if sampling:
            kwargs.update(temperature=settings.temperature, top_p=settings.top_p, top_k=settings.top_k or 0)
        device = self.model.device
        output = self.model.generate(
            input_ids=input_ids.to(device), attention_mask=attention_mask.to(device), **kwargs
        )
        return output[:, width:].tolist()

    def _to_generation(self, tokens: list[int]) -> Generation:
        stops = set(self.eos_ids) | {self.pad_id}
        end = next((i for i, token in enumerate(tokens) if token in stops), None)
        if end is None:
            text = self.tokenizer.decode(tokens, skip_special_tokens=True)
            return Generation(text, len(tokens), "length")
        return Generation(self.tokenizer.decode(tokens[:end], skip_special_tokens=True), end + 1, "stop")

    def close(self) -> None:
        """Drop the model (frees its memory unless the caller holds it too)."""
        self.model = None
        _release_memory()


# ----------------------------------------------------------------------------------------------------------
# vLLM
# ----------------------------------------------------------------------------------------------------------


def _vllm_shard_worker(payload: dict[str, Any]) -> list[list[dict[str, Any]]]:
    """Data-parallel worker (a fresh spawned process): its own GPUs, its own vLLM engine, one shard of requests."""
    os.environ["CUDA_VISIBLE_DEVICES"] = payload["devices"]
    backend = VLLMBackend(payload["model"], tokenizer=payload["tokenizer"], **payload["options"])
    requests = [GenerationRequest(**request) for request in payload["requests"]]
    settings = SamplingSettings(**payload["settings"])
    return [[dataclasses.asdict(g) for g in row] for row in backend.generate(requests, settings)]


def _split_contiguous(sizes: Sequence[int], num_shards: int) -> list[tuple[int, int]]:
    """Cut ``range(len(sizes))`` into ``num_shards`` contiguous [start, end) ranges of similar total size."""
    total = sum(sizes)
    bounds, start, acc = [], 0, 0
    for shard in range(num_shards):
        target = total * (shard + 1) / num_shards
        end = start
        while (
            end < len(sizes)
            and (acc + sizes[end] <= target or end == start)
            and len(sizes) - end > num_shards - shard - 1
        ):
            acc += sizes[end]
            end += 1
        if shard == num_shards - 1:
            while end < len(sizes):
                acc += sizes[end]
                end += 1
        bounds.append((start, end))
        start = end
    return bounds


class VLLMBackend:
    """vLLM offline generation (GPU). ``vllm`` is imported only when an engine or ``SamplingParams`` is built.

    One request per prompt with ``SamplingParams(n=num_samples, temperature, top_p, max_tokens,
    repetition_penalty=1[, top_k][, seed])`` (prefix caching shares the prompt). ``vllm.LLM`` gets ``model``,
    ``tokenizer`` (when given as a path), ``seed``, the engine options that are not None (None: vLLM's default) and
    ``llm_kwargs`` (which win). ``data_parallel_size = D`` runs D independent engines in spawned processes, each on
    its own ``tensor_parallel_size`` GPUs (taken in order from ``CUDA_VISIBLE_DEVICES``, else 0..D*TP-1) and seeded
    with ``seed`` + its shard index, each on a contiguous shard of the requests; results are merged in request order.

    Injection (tests, custom engines): ``llm``, an engine object with ``generate(prompts, sampling_params,
    use_tqdm=...)`` returning vLLM-like outputs (``.outputs[j].text``, ``.token_ids``, ``.finish_reason``) and
    ideally ``get_tokenizer()``; or ``llm_factory``, called with the engine keyword arguments instead of
    ``vllm.LLM``; ``sampling_params_class`` replaces ``vllm.SamplingParams``; ``shard_worker`` /
    ``executor_factory`` replace the data-parallel worker function and the process pool.
    """

    name = "vllm"

    def __init__(
        self,
        model: str,
        tokenizer: Any = None,
        *,
        llm: Any = None,
        llm_factory: Callable[..., Any] | None = None,
        sampling_params_class: Any = None,
        tensor_parallel_size: int | None = None,
        data_parallel_size: int = 1,
        gpu_memory_utilization: float | None = None,
        dtype: str | None = None,
        max_model_len: int | None = None,
        enable_prefix_caching: bool | None = None,
        trust_remote_code: bool | None = None,
        seed: int = 0,
        llm_kwargs: Mapping[str, Any] | None = None,
        progress: bool = True,
        shard_worker: Callable[[dict], list] | None = None,
        executor_factory: Callable[[int], Any] | None = None,
    ):
        llm_kwargs = dict(llm_kwargs or {})
        self.tensor_parallel_size = int(llm_kwargs.get("tensor_parallel_size") or tensor_parallel_size or 1)
        if self.tensor_parallel_size < 1 or data_parallel_size < 1:
            raise ValueError("tensor_parallel_size and data_parallel_size must be >= 1.")
        if llm is not None and data_parallel_size > 1:
            raise ValueError("An injected `llm` is one engine: use data_parallel_size=1 with it.")
        self.model_name = str(model)
        self.data_parallel_size = data_parallel_size
        self.seed = seed
        self.progress = progress
        self._llm_factory = llm_factory
        self._sampling_params_class = sampling_params_class
        self._shard_worker = shard_worker or _vllm_shard_worker
        self._executor_factory = executor_factory
        self._engine_options = dict(
            tensor_parallel_size=tensor_parallel_size,
            gpu_memory_utilization=gpu_memory_utilization,
            dtype=dtype,
            max_model_len=max_model_len,
            enable_prefix_caching=enable_prefix_caching,
            trust_remote_code=trust_remote_code,
            seed=seed,
            llm_kwargs=llm_kwargs,
        )
        self._tokenizer_source = tokenizer if isinstance(tokenizer, (str, os.PathLike)) else None
        self.llm = llm
        if self.llm is None and data_parallel_size == 1:
            self.llm = self._build_engine()
        if tokenizer is None or isinstance(tokenizer, (str, os.PathLike)):
            if self.llm is not None and hasattr(self.llm, "get_tokenizer"):
                tokenizer = self.llm.get_tokenizer()
            else:
                from transformers import AutoTokenizer

                tokenizer = AutoTokenizer.from_pretrained(
                    str(tokenizer or model), trust_remote_code=bool(trust_remote_code)
                )
        self.tokenizer = tokenizer

    def _build_engine(self):
        factory = self._llm_factory
        if factory is None:
            try:
                from vllm import LLM as factory
            except ImportError as error:
                raise ImportError(VLLM_INSTALL_HINT) from error
        kwargs: dict[str, Any] = {"model": self.model_name}
        if self._tokenizer_source is not None:
            kwargs["tokenizer"] = str(self._tokenizer_source)
        # Options left at None are vLLM's own defaults; llm_kwargs win over the named options.
        kwargs.update((k, v) for k, v in self._engine_options.items() if k != "llm_kwargs" and v is not None)
        kwargs.update(self._engine_options["llm_kwargs"])
        return factory(**kwargs)

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "tensor_parallel_size": self.tensor_parallel_size,
            "data_parallel_size": self.data_parallel_size,
            **{k: v for k, v in self._engine_options.items() if k not in ("tensor_parallel_size", "llm_kwargs")},
            "llm_kwargs": {k: repr(v) for k, v in self._engine_options["llm_kwargs"].items()},
        }

    def _sampling_params(self, request: GenerationRequest, settings: SamplingSettings):
        cls = self._sampling_params_class
        if cls is None:
            try:
                from vllm import SamplingParams as cls
            except ImportError as error:
                raise ImportError(VLLM_INSTALL_HINT) from error
            self._sampling_params_class = cls
        kwargs: dict[str, Any] = dict(
            n=request.num_samples,
            temperature=settings.temperature,
            top_p=settings.top_p,
            max_tokens=settings.max_new_tokens,
            repetition_penalty=1.0,
        )
        if settings.top_k is not None:
            kwargs["top_k"] = settings.top_k
        if request.seed is not None:
            kwargs["seed"] = request.seed
        return cls(**kwargs)

    def generate(self, requests: Sequence[GenerationRequest], settings: SamplingSettings) -> list[list[Generation]]:
        if not requests:
            return []
        if self.data_parallel_size > 1:
            return self._generate_data_parallel(requests, settings)
        prompts = [{"prompt_token_ids": list(request.prompt_ids)} for request in requests]
        params = [self._sampling_params(request, settings) for request in requests]
        outputs = self.llm.generate(prompts, params, use_tqdm=self.progress)
        if len(outputs) != len(requests):
            raise RuntimeError(f"vLLM returned {len(outputs)} outputs for {len(requests)} prompts.")
        results = []
        for request, output in zip(requests, outputs):
            samples = [
                Generation(
                    text=completion.text,
                    num_tokens=None if getattr(completion, "token_ids", None) is None else len(completion.token_ids),
                    finish_reason="length" if getattr(completion, "finish_reason", None) == "length" else "stop",
                )
                for completion in output.outputs
            ]
            if len(samples) != request.num_samples:
                raise RuntimeError(f"vLLM returned {len(samples)} samples instead of {request.num_samples}.")
            results.append(samples)
        return results

    def _devices(self) -> list[str]:
        needed = self.data_parallel_size * self.tensor_parallel_size
        visible = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
        devices = visible or [str(i) for i in range(needed)]
        if len(devices) < needed:
            raise ValueError(
                f"data_parallel_size={self.data_parallel_size} x tensor_parallel_size={self.tensor_parallel_size} "
                f"needs {needed} GPUs but CUDA_VISIBLE_DEVICES lists {len(devices)}: {','.join(devices)}."
            )
        return devices

    def _generate_data_parallel(self, requests, settings) -> list[list[Generation]]:
        devices = self._devices()
        bounds = _split_contiguous([r.num_samples for r in requests], self.data_parallel_size)
        payloads = []
        for shard, (start, end) in enumerate(bounds):
            if start == end:
                continue
            tp = self.tensor_parallel_size
            payloads.append(
                (
                    start,
                    {
                        "model": self.model_name,
                        "tokenizer": str(self._tokenizer_source or self.model_name),
                        "devices": ",".join(devices[shard * tp : (shard + 1) * tp]),
                        "options": {**self._engine_options, "seed": self.seed + shard, "progress": self.progress},
                        "requests": [dataclasses.asdict(r) for r in requests[start:end]],
                        "settings": dataclasses.asdict(settings),
                    },
                )
            )
        if self._executor_factory is not None:
            executor = self._executor_factory(len(payloads))
        else:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            executor = ProcessPoolExecutor(len(payloads), mp_context=multiprocessing.get_context("spawn"))
        results: list[list[Generation]] = [[] for _ in requests]
        with executor:
            futures = [(start, executor.submit(self._shard_worker, payload)) for start, payload in payloads]
            for start, future in futures:
                for offset, row in enumerate(future.result()):
                    results[start + offset] = [Generation(**sample) for sample in row]
        return results

    def close(self) -> None:
        """Drop the engine and free what memory it gives back (vLLM does not reliably release all of it)."""
        self.llm = None
        _release_memory()


# ----------------------------------------------------------------------------------------------------------
# Choosing a backend
# ----------------------------------------------------------------------------------------------------------

_TRANSFORMERS_OPTIONS = (
    "batch_size",
    "device",
    "dtype",
    "synced_gpus",
    "progress",
    "trust_remote_code",
    "model_kwargs",
)
_VLLM_OPTIONS = (
    "llm",
    "llm_factory",
    "sampling_params_class",
    "tensor_parallel_size",
    "data_parallel_size",
    "gpu_memory_utilization",
    "dtype",
    "max_model_len",
    "enable_prefix_caching",
    "trust_remote_code",
    "seed",
    "llm_kwargs",
    "progress",
)


def _pick(options: Mapping[str, Any], keys: Iterable[str]) -> dict[str, Any]:
    return {key: value for key, value in options.items() if key in keys and value is not None}


def make_backend(name: str, model: Any, tokenizer: Any = None, **options) -> TransformersBackend | VLLMBackend:
    """``name``: ``"transformers"``, ``"vllm"`` or ``"auto"`` (vLLM when it is installed and a GPU is visible).
    Options that the chosen backend does not take, and None values, are ignored (so one CLI can pass both sets)."""
    if name == "auto":
        import importlib.util

        import torch

        name = "vllm" if importlib.util.find_spec("vllm") is not None and torch.cuda.is_available() else "transformers"
    if name == "transformers":
        return TransformersBackend(model, tokenizer, **_pick(options, _TRANSFORMERS_OPTIONS))
    if name == "vllm":
        return VLLMBackend(model, tokenizer, **_pick(options, _VLLM_OPTIONS))
    raise ValueError(f"Unknown backend {name!r}; use 'vllm', 'transformers' or 'auto'.")
