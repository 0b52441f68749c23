"""Teachers of a pool build: which model, how to sample it, and the generator that does it.

A teacher is a `TeacherSpec` (parsed from ``name=...,model=...`` strings, dicts or a YAML/JSON file); a generator
samples its solutions through the backends of `ampo_trl.generation` (vLLM on GPU, transformers anywhere).
Templates that end the prompt with an opened ``<think>`` (DeepSeek-R1-Distill) get that opening prepended to the
completion, so the stored text is complete.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ..answers import SYSTEM_PROMPT
from ..generation import Generation as Completion  # per sample: text, num_tokens, finish_reason (None if unknown)
from ..generation import (
    GenerationRequest,
    SamplingSettings,
    TransformersBackend,
    VLLMBackend,
    derive_seed,
    prompt_token_ids,
    render_prompt,
)
from .questions import Question


@dataclass
class TeacherSpec:
    """One teacher: a model (hub id or local path) and how to sample it.

    ``system_prompt``: ``None`` = the paper's `SYSTEM_PROMPT`; ``""`` = no system message.
    ``chat_template_kwargs``: passed to ``tokenizer.apply_chat_template`` (e.g. ``{"enable_thinking": True}``).
    ``llm_kwargs``: passed to ``vllm.LLM`` (e.g. ``tensor_parallel_size``, ``max_model_len``,
    ``gpu_memory_utilization``) or to ``from_pretrained`` for the transformers backend; they do not change the
    samples and are not part of the resume check.
    """

    model: str
    name: str | None = None
    n: int = 8
    temperature: float = 0.6
    top_p: float = 0.95
    top_k: int | None = None
    max_new_tokens: int = 8192
    seed: int = 0
    system_prompt: str | None = None
    chat_template_kwargs: dict[str, Any] = field(default_factory=dict)
    llm_kwargs: dict[str, Any] = field(default_factory=dict)
    tokenizer: str | None = None

    def __post_init__(self):
        if not self.model:
            raise ValueError("A teacher needs a model (hub id or local path).")
        if self.name is None:
            self.name = Path(str(self.model).rstrip("/")).name
        if self.n < 1:
            raise ValueError(f"teacher {self.name!r}: n must be >= 1, got {self.n}.")
        if self.max_new_tokens < 1:
            raise ValueError(f"teacher {self.name!r}: max_new_tokens must be >= 1, got {self.max_new_tokens}.")

    @property
    def effective_system_prompt(self) -> str:
        return SYSTEM_PROMPT if self.system_prompt is None else self.system_prompt

    def messages(self, question: Question) -> list[dict]:
        messages = [{"role": "user", "content": question.question}]
        if self.effective_system_prompt:
            messages.insert(0, {"role": "system", "content": self.effective_system_prompt})
        return messages

    def settings(self) -> dict[str, Any]:
        """What determines the samples (compared on resume)."""
        return {
            "model": self.model,
            "tokenizer": self.tokenizer,
            "n": self.n,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k,
            "max_new_tokens": self.max_new_tokens,
            "seed": self.seed,
            "system_prompt": self.effective_system_prompt,
            "chat_template_kwargs": dict(sorted(self.chat_template_kwargs.items())),
        }

    @property
    def slug(self) -> str:
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in self.name)
        return safe or "teacher"


_SPEC_FIELDS = {f.name for f in dataclasses.fields(TeacherSpec)}


def _parse_value(text: str):
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def teacher_from_dict(data: dict[str, Any], defaults: dict[str, Any] | None = None) -> TeacherSpec:
    """A `TeacherSpec` from a mapping; ``enable_thinking`` and ``template.<key>`` go to ``chat_template_kwargs``,
    ``vllm.<key>`` / ``llm.<key>`` to ``llm_kwargs``; ``defaults`` fill keys the mapping does not set."""
    values: dict[str, Any] = {}
    template: dict[str, Any] = {}
    llm: dict[str, Any] = {}
    for key, value in {**(defaults or {}), **data}.items():
        if key == "enable_thinking":
            template["enable_thinking"] = value
        elif key.startswith("template."):
            template[key.split(".", 1)[1]] = value
        elif key.startswith(("vllm.", "llm.")):
            llm[key.split(".", 1)[1]] = value
        elif key == "chat_template_kwargs":
            template.update(value or {})
        elif key == "llm_kwargs":
            llm.update(value or {})
        elif key in _SPEC_FIELDS:
            values[key] = value
        else:
            known = sorted(_SPEC_FIELDS - {"chat_template_kwargs", "llm_kwargs"})
            raise ValueError(
                f"Unknown teacher option {key!r}. Known: {known}, enable_thinking, template.<chat template kwarg>, "
                "vllm.<vllm.LLM kwarg>."
            )
    return TeacherSpec(**values, chat_template_kwargs=template, llm_kwargs=llm)


def parse_teacher(spec: str, defaults: dict[str, Any] | None = None) -> TeacherSpec:
    """Parse a command-line teacher: ``"Qwen/Qwen3-8B"`` or ``"name=Qwen3-8B,model=Qwen/Qwen3-8B,n=8,
    enable_thinking=true,vllm.max_model_len=12288"`` (comma-separated ``key=value``; a part without ``=`` is the
    model)."""
    data: dict[str, Any] = {}
    for part in filter(None, (piece.strip() for piece in spec.split(","))):
        if "=" in part:
            key, value = part.split("=", 1)
            data[key.strip()] = _parse_value(value.strip()) if key.strip() not in ("model", "name") else value.strip()
        elif "model" not in data:
            data["model"] = part
        else:
            raise ValueError(
                f"Teacher spec {spec!r}: {part!r} is not key=value (the model is already {data['model']!r})."
            )
    return teacher_from_dict(data, defaults)


def load_teachers_file(path: str | os.PathLike, defaults: dict[str, Any] | None = None) -> list[TeacherSpec]:
    """Teachers from a YAML or JSON file: a list of mappings (or ``{"teachers": [...]}``) with `TeacherSpec` keys."""
    text = Path(path).read_text(encoding="utf-8")
    if str(path).endswith((".yaml", ".yml")):
        import yaml

        data = yaml.safe_load(text)
    else:
        data = json.loads(text)
    if isinstance(data, dict):
        data = data.get("teachers")
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a list of teachers (or a mapping with a 'teachers' list).")
    return [teacher_from_dict(dict(item), defaults) for item in data]


class TeacherGenerator(Protocol):
    """What a backend provides: ``generate`` returns, for each question, its samples (`Completion` s or strings)."""

    def generate(
        self, messages: Sequence[list[dict]], questions: Sequence[Question], n: int
    ) -> list[list[Completion | str]]: ...

    def close(self) -> None: ...


def open_think_prefix(prompt_text: str) -> str:
    """``"<think>\\n"`` or ``"<think>"`` when a templated prompt ends inside an opened thinking block, else ``""``."""
    stripped = prompt_text.rstrip(" ")
    for prefix in ("<think>\n", "<think>"):
        if stripped.endswith(prefix):
            return prefix
    return ""


class BackendGenerator:
    """A `TeacherGenerator` on a shared backend (`ampo_trl.generation`): the teacher's chat template and
    ``chat_template_kwargs``, a per-question seed (``derive_seed(teacher.seed, question.id)``, so samples do not depend
    on chunking), the teacher's sampling settings, and an opened ``<think>`` of the prompt put back in front of
    the text."""

    def __init__(self, teacher: TeacherSpec, backend: Any):
        self.teacher = teacher
        self.backend = backend
        self.tokenizer = backend.tokenizer
        self.sampling = SamplingSettings(
            temperature=teacher.temperature,
            top_p=teacher.top_p,
            max_new_tokens=teacher.max_new_tokens,
            seed=teacher.seed,
            top_k=teacher.top_k,
        )

    def generate(self, messages: list[list[dict]], questions: Sequence[Question], n: int) -> list[list[Completion]]:
        requests, prefixes = [], []
        for message_list, question in zip(messages, questions):
            prompt = render_prompt(self.tokenizer, message_list, self.teacher.chat_template_kwargs)
            prefixes.append(open_think_prefix(prompt))
            ids = prompt_token_ids(self.tokenizer, prompt)
            requests.append(GenerationRequest(ids, n, seed=derive_seed(self.teacher.seed, question)))
        outputs = self.backend.generate(requests, self.sampling)
        return [
            [dataclasses.replace(sample, text=prefix + sample.text) for sample in samples]
            for prefix, samples in zip(prefixes, outputs)
        ]

    def close(self) -> None:
        self.backend.close()


class VLLMGenerator(BackendGenerator):
    """vLLM backend (GPU): `ampo_trl.generation.VLLMBackend` with the teacher's ``llm_kwargs``. ``llm_factory``
    (default ``vllm.LLM``) and ``sampling_params_factory`` (default ``vllm.SamplingParams``) can be injected; vLLM is
    imported only when one of them is not given."""

    def __init__(
        self,
        teacher: TeacherSpec,
        llm_factory: Callable[..., Any] | None = None,
        sampling_params_factory: Callable[..., Any] | None = None,
    ):
        backend = VLLMBackend(
            teacher.model,
            teacher.tokenizer,
            llm_factory=llm_factory,
            sampling_params_class=sampling_params_factory,
            seed=teacher.seed,
            llm_kwargs=teacher.llm_kwargs,
            progress=False,
        )
        super().__init__(teacher, backend)


class TransformersGenerator(BackendGenerator):
    """transformers backend: `ampo_trl.generation.TransformersBackend` on ``device`` (default CPU), the teacher's
    ``llm_kwargs`` passed to ``from_pretrained``; each question's ``n`` samples in ``generate`` calls of at most
    ``batch_size`` sequences (default ``n``: one call per question). Slow; meant for tests and small models."""

    def __init__(
        self, teacher: TeacherSpec, device: str = "cpu", dtype: str | None = None, batch_size: int | None = None
    ):
        backend = TransformersBackend(
            teacher.model,
            teacher.tokenizer or teacher.model,
            batch_size=batch_size or teacher.n,
            device=device,
            dtype=dtype,
            progress=False,
            model_kwargs=teacher.llm_kwargs,
        )
        super().__init__(teacher, backend)


def make_generator_factory(
    backend: str | Callable[[TeacherSpec], Any], backend_options: dict[str, Any] | None = None
) -> Callable[[TeacherSpec], Any]:
    """``backend``: ``"vllm"``, ``"transformers"``, ``"module:callable"`` or a callable ``(teacher) -> generator``;
    ``backend_options`` are passed to the generator's constructor."""
    options = dict(backend_options or {})
    if callable(backend):
        return lambda teacher: backend(teacher, **options)
    if backend == "vllm":
        return lambda teacher: VLLMGenerator(teacher, **options)
    if backend == "transformers":
        return lambda teacher: TransformersGenerator(teacher, **options)
    if isinstance(backend, str) and ":" in backend:
        import importlib

        module_name, attribute = backend.split(":", 1)
        factory = getattr(importlib.import_module(module_name), attribute)
        return lambda teacher: factory(teacher, **options)
    raise ValueError(f"backend must be 'vllm', 'transformers', 'module:callable' or a callable, got {backend!r}.")
