"""Build a multi-guidance pool from a question set and several teacher models (paper A.1.2, spec section 2).

Pipeline, one teacher at a time:

1. **Questions** (`load_questions`): a hub id or a local ``.jsonl`` / ``.json`` / ``.parquet`` / ``.csv`` file with a
   question (``question``, ``problem`` or ``prompt`` = chat messages) and an answer (``answer``, ``ground_truth``,
   ``reward_model.ground_truth``, ``final_answer`` or the ``\\boxed{}`` of a ``solution``). Each question gets a
   stable id (hash of question and answer), which keys everything below. Rows without a question or an answer are
   skipped and duplicates merged; both are counted.
2. **Generation**: every teacher samples ``n`` solutions per question with the spec's system prompt
   (`ampo_trl.pool.SYSTEM_PROMPT`, per-teacher override), its own chat template and ``chat_template_kwargs``
   (e.g. Qwen3's ``enable_thinking``), and a per-question seed (`derive_seed`). Backends: ``"vllm"`` (GPU;
   `VLLMGenerator`, vLLM imported lazily), ``"transformers"`` (CPU or GPU, slow; `TransformersGenerator`), both thin
   layers over the backends of `ampo_trl.generation` that the evaluation uses too, or any callable
   ``make(teacher) -> generator``.
   Templates that end the prompt with an opened ``<think>`` (DeepSeek-R1-Distill) get that opening prepended to the
   completion, so the stored text is complete.
3. **Normalisation** (`ampo_trl.pool.normalize_solution`): ``<think>…</think>`` + ``\\boxed{x}`` outputs get
   ``<answer>x</answer>`` appended; texts that already have an ``<answer>`` pair are unchanged.
4. **Verification**: ``ampo_trl.rewards.extract_answer`` (last ``<answer>`` pair, else last ``\\boxed{}``) and
   ``verify_answers`` (Math-Verify, with a time limit) against the ground truth. Truncated samples
   (``finish_reason == "length"``) are never kept.
5. **Resumable storage**: ``<output_dir>/generations/<teacher>.jsonl`` gets one line per question as soon as its
   chunk is verified (flushed and fsynced); ``<teacher>.manifest.json`` records the settings. A rerun checks that
   the settings match, skips questions already in the file (a torn last line from a crash is cut off) and does not
   even load a teacher whose questions are all done.
6. **Selection**: per teacher the shortest correct sample (tokens of the teacher's tokenizer; characters when a
   custom generator gives no token count); with ``prefer_formatted`` (default) a correct sample that passes the
   format reward (exactly one ``<answer>`` pair) is preferred over a shorter one that does not.
7. **Intersection** (optional): ``compositions`` = lists of teacher names; a question is kept only if it has at
   least one solution in every composition (paper: so every teacher composition can guide every question).
   Without compositions, questions that no teacher solved are dropped (counted) unless ``keep_unsolved``.
8. **Output**: canonical pool rows (``prompt``, ``answer``, ``teacher_solutions`` with ``teacher``, ``text``,
   ``length``; plus ``question_id``, ``question`` and ``data_source`` when known), validated with
   `ampo_trl.pool.validate_pool_dataset`, written to parquet and/or pushed to the hub, and a per-teacher table of
   solve rates and lengths (also saved as ``build_summary.json``).

`scripts/build_pool.py` and ``ampo-pool build`` are thin wrappers around `main`.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import os
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from .generation import Generation as Completion  # per sample: text, num_tokens, finish_reason (None if unknown)
from .generation import (
    GenerationRequest,
    SamplingSettings,
    TransformersBackend,
    VLLMBackend,
    derive_seed,
    prompt_token_ids,
    render_prompt,
)
from .pool import (
    SYSTEM_PROMPT,
    answer_format_ok,
    apply_system_prompt,
    format_table,
    gold_text,
    length_percentiles,
    normalize_solution,
    validate_pool_dataset,
)

logger = logging.getLogger(__name__)

MANIFEST_VERSION = 1
QUESTION_COLUMNS = ("question", "problem", "prompt", "query", "input")
ANSWER_COLUMNS = ("answer", "ground_truth", "reward_model", "final_answer", "solution")


# ------------------------------------------------------------------------------------------------------- questions
@dataclass(frozen=True)
class Question:
    """One question of the pool: ``id`` is a stable hash of question and answer."""

    id: str
    question: str
    answer: str
    prompt: tuple | None = None  # the source's chat messages (as a tuple of dicts), if it had them
    data_source: str | None = None


def question_id(question: str, answer: str) -> str:
    return hashlib.sha1(f"{question}\x00{answer}".encode()).hexdigest()[:16]


def _user_content(prompt) -> str | None:
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, (list, tuple)):
        users = [m.get("content") for m in prompt if isinstance(m, dict) and m.get("role") == "user"]
        return users[-1] if users else None
    return None


def _answer_of(row: dict, answer_column: str | None) -> str:
    from .rewards import extract_answer

    columns = [answer_column] if answer_column else [c for c in ANSWER_COLUMNS if row.get(c) is not None]
    for column in columns:
        value = row.get(column)
        if value is None:
            continue
        if column == "solution":  # a worked solution: its final answer
            text = gold_text(value)
            return extract_answer(text) or ""
        return gold_text(value)
    return ""


def questions_from_rows(
    rows: Iterable[dict], question_column: str | None = None, answer_column: str | None = None
) -> tuple[list[Question], Counter]:
    """`Question` s from row dicts (see the module docstring for the recognised columns) and counts of skipped
    rows (``missing_question``, ``missing_answer``) and merged ``duplicates``."""
    from .pool import _to_python

    questions: dict[str, Question] = {}
    counts: Counter = Counter()
    for row in rows:
        counts["rows"] += 1
        row = {key: _to_python(value) for key, value in row.items()}
        if question_column:
            value = row.get(question_column)
        else:
            value = next((row[c] for c in QUESTION_COLUMNS if row.get(c) is not None), None)
        prompt = value if isinstance(value, list) else None
        if prompt is not None:
            prompt = [dict(_to_python(message)) for message in prompt]
        text = _user_content(value)
        if not text or not str(text).strip():
            counts["missing_question"] += 1
            continue
        answer = _answer_of(row, answer_column)
        if not answer:
            counts["missing_answer"] += 1
            continue
        qid = question_id(str(text), answer)
        if qid in questions:
            counts["duplicates"] += 1
            continue
        source = row.get("data_source")
        questions[qid] = Question(
            id=qid,
            question=str(text),
            answer=answer,
            prompt=tuple(prompt) if prompt else None,
            data_source=str(source) if source is not None else None,
        )
    counts["questions"] = len(questions)
    return list(questions.values()), counts


def load_questions(
    source,
    split: str = "train",
    question_column: str | None = None,
    answer_column: str | None = None,
    limit: int | None = None,
) -> tuple[list[Question], Counter]:
    """Questions from a hub id, a local file (see `ampo_trl.pool.load_table`), a `datasets.Dataset` or a list of
    row dicts. ``limit`` keeps the first questions (after skipping unusable rows)."""
    from .pool import load_table, read_rows

    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if os.path.isfile(path) and path.endswith((".jsonl", ".json")):
            rows: Iterable[dict] = read_rows(path)
        else:
            rows = load_table(path, split=split)
    else:
        rows = source
    questions, counts = questions_from_rows(rows, question_column, answer_column)
    if question_column is None and counts["rows"] and counts["missing_question"] == counts["rows"]:
        raise ValueError(
            f"No question found in {source!r}: expected one of the columns {list(QUESTION_COLUMNS)} "
            "(or pass question_column / --question-column)."
        )
    if counts["questions"] == 0 and counts["missing_answer"]:
        raise ValueError(
            f"No answer found in {source!r}: expected one of the columns {list(ANSWER_COLUMNS)} "
            "(or pass answer_column / --answer-column)."
        )
    if limit is not None and limit < len(questions):
        counts["beyond_limit"] = len(questions) - limit
        questions = questions[:limit]
        counts["questions"] = len(questions)
    return questions, counts


# -------------------------------------------------------------------------------------------------------- teachers
@dataclass
class TeacherSpec:
    """One teacher: a model (hub id or local path) and how to sample it.

    ``system_prompt``: ``None`` = the spec's `SYSTEM_PROMPT`; ``""`` = no system message.
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
    max_tokens: int = 8192
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
        if self.max_tokens < 1:
            raise ValueError(f"teacher {self.name!r}: max_tokens must be >= 1, got {self.max_tokens}.")

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
            "max_tokens": self.max_tokens,
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


# ------------------------------------------------------------------------------------------------------ generators
# The backends themselves are `ampo_trl.generation`'s, shared with the evaluation; this layer turns a teacher and
# its questions into requests (teacher prompt, chat-template kwargs, per-question seed) and the samples back into
# `Completion` s (= `ampo_trl.generation.Generation`).


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
            max_new_tokens=teacher.max_tokens,
            seed=teacher.seed,
            top_k=teacher.top_k,
        )

    def generate(self, messages, questions, n):
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

    def close(self):
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


def make_generator_factory(backend, backend_options: dict[str, Any] | None = None) -> Callable[[TeacherSpec], Any]:
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


# -------------------------------------------------------------------------------------------- resumable generation
def generations_dir(output_dir: str | os.PathLike) -> Path:
    return Path(output_dir) / "generations"


def _generation_paths(output_dir, teacher: TeacherSpec) -> tuple[Path, Path]:
    directory = generations_dir(output_dir)
    return directory / f"{teacher.slug}.jsonl", directory / f"{teacher.slug}.manifest.json"


class ManifestMismatchError(ValueError):
    """A rerun with different generation settings for a teacher that already has stored generations."""


def read_generations(path: Path, repair: bool = True) -> tuple[dict[str, dict], int]:
    """Records by question id from a teacher's JSONL, and the number of discarded torn lines. With ``repair`` a file
    that does not end with a newline (a crash mid-write) is truncated after its last complete line."""
    records: dict[str, dict] = {}
    if not path.exists():
        return records, 0
    data = path.read_bytes()
    discarded = 0
    if data and not data.endswith(b"\n"):
        cut = data.rfind(b"\n") + 1
        discarded += 1
        data = data[:cut]
        if repair:
            with open(path, "r+b") as handle:
                handle.truncate(cut)
    for line in data.decode("utf-8").splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            discarded += 1
            continue
        records[record["id"]] = record
    return records, discarded


def _check_manifest(manifest_path: Path, teacher: TeacherSpec, normalize: bool) -> None:
    if not manifest_path.exists():
        return
    stored = json.loads(manifest_path.read_text(encoding="utf-8"))
    current = {"settings": teacher.settings(), "normalize": normalize}
    previous = {"settings": stored.get("settings"), "normalize": stored.get("normalize")}
    if json.loads(json.dumps(current)) != previous:
        differences = [
            f"{key}: stored {previous['settings'].get(key)!r}, now {value!r}"
            for key, value in json.loads(json.dumps(current["settings"])).items()
            if (previous["settings"] or {}).get(key) != value
        ]
        if previous["normalize"] != normalize:
            differences.append(f"normalize: stored {previous['normalize']!r}, now {normalize!r}")
        raise ManifestMismatchError(
            f"Teacher {teacher.name!r} already has generations in {manifest_path.parent} made with other settings "
            f"({'; '.join(differences)}). Use another --output-dir, restore the settings, or delete "
            f"{manifest_path.name} and {manifest_path.with_suffix('').with_suffix('.jsonl').name} to regenerate."
        )


def _write_manifest(manifest_path: Path, teacher: TeacherSpec, normalize: bool, backend: str, status: dict) -> None:
    payload = {
        "version": MANIFEST_VERSION,
        "teacher": teacher.name,
        "settings": teacher.settings(),
        "normalize": normalize,
        "backend": backend,
        "llm_kwargs": teacher.llm_kwargs,
        **status,
    }
    tmp = manifest_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str), encoding="utf-8")
    os.replace(tmp, manifest_path)


@dataclass
class GenerationStats:
    teacher: str
    questions: int = 0
    generated_now: int = 0
    resumed: int = 0
    samples: int = 0
    correct_samples: int = 0
    truncated_samples: int = 0
    normalized_samples: int = 0
    solved_questions: int = 0
    kept_lengths: list[int] = field(default_factory=list)
    skipped: bool = False  # every question was already done: the teacher was not loaded

    def row(self) -> list[Any]:
        lengths = length_percentiles(self.kept_lengths)
        return [
            self.teacher,
            self.questions,
            self.generated_now,
            self.samples,
            f"{100 * self.correct_samples / self.samples:.1f}%" if self.samples else "-",
            self.solved_questions,
            f"{100 * self.solved_questions / self.questions:.1f}%" if self.questions else "-",
            self.truncated_samples,
            lengths.get("mean"),
            lengths.get("p50"),
            lengths.get("max"),
        ]

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["kept_length_percentiles"] = length_percentiles(data.pop("kept_lengths"))
        return data


TABLE_HEADERS = [
    "teacher",
    "questions",
    "generated now",
    "samples",
    "sample acc",
    "solved",
    "solve rate",
    "truncated",
    "kept len mean",
    "kept len p50",
    "kept len max",
]


def _verify(samples: list[Completion], answer: str, timeout: float) -> list[bool]:
    from .rewards import extract_answer, verify_answers

    predictions = [extract_answer(sample.text) for sample in samples]
    return verify_answers(predictions, [answer] * len(samples), timeout=timeout)


def generate_for_teacher(
    teacher: TeacherSpec,
    questions: Sequence[Question],
    output_dir: str | os.PathLike,
    make_generator: Callable[[TeacherSpec], Any],
    *,
    backend_name: str = "custom",
    chunk_size: int = 256,
    normalize: bool = True,
    verify_timeout: float = 5.0,
    progress: bool = True,
) -> tuple[dict[str, dict], GenerationStats]:
    """Generate (or resume) ``teacher``'s samples for ``questions``; returns the records by question id.

    Each record: ``{"id", "samples": [{"text", "tokens", "finish", "correct", "formatted"[, "raw"]}]}``; ``raw``
    (the text before normalisation) is stored only when normalisation changed the text.
    """
    from tqdm.auto import tqdm

    jsonl_path, manifest_path = _generation_paths(output_dir, teacher)
    jsonl_path.parent.mkdir(parents=True, exist_ok=True)
    _check_manifest(manifest_path, teacher, normalize)
    records, discarded = read_generations(jsonl_path)
    if discarded:
        logger.warning("%s: discarded %d incomplete line(s) left by an interrupted run.", jsonl_path, discarded)
    stats = GenerationStats(teacher=teacher.name, questions=len(questions))
    todo = [q for q in questions if q.id not in records]
    stats.resumed = len(questions) - len(todo)
    status = {"status": "running", "questions_done": stats.resumed, "questions_requested": len(questions)}
    if not todo:
        stats.skipped = True
        _write_manifest(manifest_path, teacher, normalize, backend_name, {**status, "status": "done"})
        return {q.id: records[q.id] for q in questions}, stats
    _write_manifest(manifest_path, teacher, normalize, backend_name, status)
    generator = make_generator(teacher)
    bar = tqdm(
        total=len(questions), initial=stats.resumed, desc=f"{teacher.name}", unit="q", disable=not progress, leave=True
    )
    try:
        with open(jsonl_path, "a", encoding="utf-8") as handle:
            for start in range(0, len(todo), chunk_size):
                chunk = todo[start : start + chunk_size]
                outputs = generator.generate([teacher.messages(q) for q in chunk], chunk, teacher.n)
                if len(outputs) != len(chunk):
                    raise RuntimeError(
                        f"teacher {teacher.name!r}: the generator returned {len(outputs)} results for {len(chunk)} "
                        "questions."
                    )
                lines = []
                for question, samples in zip(chunk, outputs):
                    record = _make_record(question, samples, normalize, verify_timeout)
                    records[question.id] = record
                    lines.append(json.dumps(record, ensure_ascii=False) + "\n")
                handle.write("".join(lines))
                handle.flush()
                os.fsync(handle.fileno())
                stats.generated_now += len(chunk)
                status["questions_done"] = stats.resumed + stats.generated_now
                _write_manifest(manifest_path, teacher, normalize, backend_name, status)
                bar.update(len(chunk))
    finally:
        bar.close()
        close = getattr(generator, "close", None)
        if close is not None:
            close()
    _write_manifest(manifest_path, teacher, normalize, backend_name, {**status, "status": "done"})
    return {q.id: records[q.id] for q in questions}, stats


def _make_record(question: Question, samples, normalize: bool, verify_timeout: float) -> dict:
    completions = [sample if isinstance(sample, Completion) else Completion(text=str(sample)) for sample in samples]
    entries = []
    for completion in completions:
        text = completion.text
        entry: dict[str, Any] = {}
        if normalize:
            normalized = normalize_solution(text)
            if normalized != text:
                entry["raw"] = text
            text = normalized
        entry.update(text=text, tokens=completion.num_tokens, finish=completion.finish_reason)
        entries.append(entry)
    verdicts = _verify([Completion(e["text"]) for e in entries], question.answer, verify_timeout)
    for entry, correct in zip(entries, verdicts):
        entry["correct"] = bool(correct)
        entry["formatted"] = answer_format_ok(entry["text"])
    return {"id": question.id, "samples": entries}


# ------------------------------------------------------------------------------------------- selection and output
def select_solution(record: dict, prefer_formatted: bool = True) -> dict | None:
    """The shortest correct, non-truncated sample of a record (see the module docstring), or None."""
    candidates = [
        (index, sample)
        for index, sample in enumerate(record.get("samples", []))
        if sample.get("correct") and sample.get("finish") != "length" and sample.get("text", "").strip()
    ]
    if not candidates:
        return None

    def key(item):
        index, sample = item
        length = sample["tokens"] if sample.get("tokens") is not None else len(sample["text"])
        return ((not sample.get("formatted", True)) if prefer_formatted else False, length, index)

    return min(candidates, key=key)[1]


def intersect_compositions(
    solved: dict[str, set[str]], compositions: Sequence[Sequence[str]] | None, keep_unsolved: bool = False
) -> set[str]:
    """Question ids to keep: with ``compositions``, those with a solution from at least one teacher of *every*
    composition; without, those with any solution (all of them if ``keep_unsolved``)."""
    if compositions:
        return {
            qid for qid, teachers in solved.items() if all(teachers & set(composition) for composition in compositions)
        }
    return {qid for qid, teachers in solved.items() if teachers or keep_unsolved}


@dataclass
class BuildResult:
    dataset: Any  # datasets.Dataset, or None when generation was restricted to some teachers (``only``)
    teacher_stats: list[GenerationStats]
    counts: Counter
    output_path: Path | None = None
    report: Any = None  # PoolReport of the final dataset

    def table(self) -> str:
        return format_table(TABLE_HEADERS, [stats.row() for stats in self.teacher_stats])


def build_pool(
    questions: Sequence[Question] | Any,
    teachers: Sequence[TeacherSpec],
    output_dir: str | os.PathLike,
    *,
    backend: str | Callable = "vllm",
    backend_options: dict[str, Any] | None = None,
    compositions: Sequence[Sequence[str]] | None = None,
    keep_unsolved: bool = False,
    only: Sequence[str] | None = None,
    chunk_size: int | None = None,
    normalize: bool = True,
    prefer_formatted: bool = True,
    student_system_prompt: str | None = SYSTEM_PROMPT,
    verify_timeout: float = 5.0,
    output_path: str | os.PathLike | None = None,
    push_to_hub: str | None = None,
    private: bool = False,
    progress: bool = True,
) -> BuildResult:
    """Run the whole pipeline of the module docstring and return the pool dataset with per-teacher statistics.

    ``questions``: `Question` s, or anything `load_questions` accepts. ``only``: generate for these teachers and stop
    (no dataset; lets several processes generate different teachers in parallel, a final run then assembles).
    ``student_system_prompt``: system message of the output prompts (``None``/``""``: user message only).
    ``output_path``: parquet file to write (default ``<output_dir>/pool.parquet``).
    """
    teachers = list(teachers)
    if not teachers:
        raise ValueError("build_pool needs at least one teacher.")
    names = [t.name for t in teachers]
    duplicates = sorted(name for name, count in Counter(names).items() if count > 1)
    if duplicates:
        raise ValueError(f"Teacher names must be unique; repeated: {duplicates}. Set name= for each.")
    slugs = Counter(t.slug for t in teachers)
    if any(count > 1 for count in slugs.values()):
        raise ValueError(
            f"Teacher names {names} map to the same file name; choose names that differ in [A-Za-z0-9-_.]."
        )
    for composition in compositions or []:
        unknown = sorted(set(composition) - set(names))
        if unknown or not composition:
            raise ValueError(f"Composition {list(composition)} names unknown teachers {unknown}; teachers: {names}.")
    for name in only or []:
        if name not in names:
            raise ValueError(f"only={name!r} is not a teacher; teachers: {names}.")

    counts: Counter = Counter()
    if not (questions and isinstance(questions, (list, tuple)) and isinstance(questions[0], Question)):
        questions, load_counts = load_questions(questions)
        counts.update({f"questions_{key}": value for key, value in load_counts.items()})
    questions = list(questions)
    counts["questions"] = len(questions)
    if not questions:
        raise ValueError("No questions to build a pool for.")

    backend_name = backend if isinstance(backend, str) else getattr(backend, "__name__", "custom")
    if chunk_size is None:
        chunk_size = 512 if backend == "vllm" else 8
    make_generator = make_generator_factory(backend, backend_options)
    Path(output_dir).mkdir(parents=True, exist_ok=True)

    records_by_teacher: dict[str, dict[str, dict]] = {}
    all_stats: list[GenerationStats] = []
    for teacher in teachers:
        if only and teacher.name not in only:
            continue
        records, stats = generate_for_teacher(
            teacher,
            questions,
            output_dir,
            make_generator,
            backend_name=backend_name,
            chunk_size=chunk_size,
            normalize=normalize,
            verify_timeout=verify_timeout,
            progress=progress,
        )
        records_by_teacher[teacher.name] = records
        all_stats.append(stats)

    for stats in all_stats:
        _fill_stats(stats, records_by_teacher[stats.teacher], prefer_formatted)

    if only:
        return BuildResult(dataset=None, teacher_stats=all_stats, counts=counts)

    selected: dict[str, dict[str, dict]] = {q.id: {} for q in questions}
    for stats in all_stats:
        for qid, record in records_by_teacher[stats.teacher].items():
            choice = select_solution(record, prefer_formatted)
            if choice is not None:
                selected[qid][stats.teacher] = choice
    solved = {qid: set(by_teacher) for qid, by_teacher in selected.items()}
    keep = intersect_compositions(solved, compositions, keep_unsolved)
    counts["unsolved_by_all"] = sum(1 for teachers_ in solved.values() if not teachers_)
    counts["dropped_by_intersection"] = sum(1 for qid, t in solved.items() if t and qid not in keep)
    counts["dropped_unsolved"] = sum(1 for qid, t in solved.items() if not t and qid not in keep)
    counts["pool_rows"] = len(keep)

    dataset = _assemble(questions, selected, keep, names, student_system_prompt)
    report = validate_pool_dataset(dataset)
    result = BuildResult(dataset=dataset, teacher_stats=all_stats, counts=counts, report=report)
    output_path = Path(output_path) if output_path is not None else Path(output_dir) / "pool.parquet"
    output_path.parent.mkdir(parents=True, exist_ok=True)
    dataset.to_parquet(str(output_path))
    result.output_path = output_path
    if push_to_hub:
        dataset.push_to_hub(push_to_hub, private=private)
    summary = {
        "counts": dict(counts),
        "teachers": [stats.to_dict() for stats in all_stats],
        "compositions": [list(c) for c in compositions or []],
        "output_path": str(result.output_path) if result.output_path else None,
        "pool_report": report.stats.to_dict(),
        "pool_problems": {"errors": dict(report.error_counts), "warnings": dict(report.warning_counts)},
    }
    (Path(output_dir) / "build_summary.json").write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
    return result


def _fill_stats(stats: GenerationStats, records: dict[str, dict], prefer_formatted: bool) -> None:
    """Sample and selection counters over every stored record of the requested questions (resumed ones too)."""
    stats.samples = stats.correct_samples = stats.truncated_samples = stats.normalized_samples = 0
    stats.solved_questions = 0
    stats.kept_lengths = []
    for record in records.values():
        samples = record["samples"]
        stats.samples += len(samples)
        stats.correct_samples += sum(bool(s.get("correct")) for s in samples)
        stats.truncated_samples += sum(s.get("finish") == "length" for s in samples)
        stats.normalized_samples += sum("raw" in s for s in samples)
        choice = select_solution(record, prefer_formatted)
        if choice is not None:
            stats.solved_questions += 1
            stats.kept_lengths.append(choice["tokens"] if choice.get("tokens") is not None else len(choice["text"]))


def _assemble(questions, selected, keep, teacher_order, student_system_prompt):
    from datasets import Dataset, Features, Value

    rows = {"prompt": [], "answer": [], "teacher_solutions": [], "question_id": [], "question": [], "data_source": []}
    for question in questions:
        if question.id not in keep:
            continue
        source_prompt = list(question.prompt) if question.prompt else [{"role": "user", "content": question.question}]
        prompt = apply_system_prompt(source_prompt, student_system_prompt or "")
        prompt = [{"role": m["role"], "content": m["content"]} for m in prompt]
        pool = [
            {
                "teacher": name,
                "text": selected[question.id][name]["text"],
                "length": selected[question.id][name]["tokens"],
            }
            for name in teacher_order
            if name in selected[question.id]
        ]
        rows["prompt"].append(prompt)
        rows["answer"].append(question.answer)
        rows["teacher_solutions"].append(pool)
        rows["question_id"].append(question.id)
        rows["question"].append(question.question)
        rows["data_source"].append(question.data_source)
    features = Features(
        {
            "prompt": [{"role": Value("string"), "content": Value("string")}],
            "answer": Value("string"),
            "teacher_solutions": [{"teacher": Value("string"), "text": Value("string"), "length": Value("int64")}],
            "question_id": Value("string"),
            "question": Value("string"),
            "data_source": Value("string"),
        }
    )
    return Dataset.from_dict(rows, features=features)


# ------------------------------------------------------------------------------------------------------------- CLI
def build_arg_parser(prog: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Build an AMPO multi-guidance pool: sample n solutions per question from each teacher, verify "
        "them, keep each teacher's shortest correct one, optionally intersect teacher compositions, write parquet.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    data = parser.add_argument_group("questions")
    data.add_argument("--questions", required=True, help="hub dataset id or local .jsonl/.json/.parquet/.csv file")
    data.add_argument("--split", default="train", help="split of a hub dataset")
    data.add_argument("--question-column", default=None, help=f"default: first of {list(QUESTION_COLUMNS)}")
    data.add_argument("--answer-column", default=None, help=f"default: first of {list(ANSWER_COLUMNS)}")
    data.add_argument("--limit", type=int, default=None, help="use only the first N questions")

    teachers = parser.add_argument_group("teachers")
    teachers.add_argument(
        "--teacher",
        action="append",
        default=[],
        metavar="SPEC",
        help="repeatable: 'MODEL' or 'name=NAME,model=MODEL,n=8,enable_thinking=true,vllm.max_model_len=16384'",
    )
    teachers.add_argument("--teachers-file", default=None, help="YAML/JSON list of teacher mappings")
    teachers.add_argument("--n", type=int, default=8, help="samples per question per teacher (paper: 8)")
    teachers.add_argument("--temperature", type=float, default=0.6)
    teachers.add_argument("--top-p", type=float, default=0.95)
    teachers.add_argument("--top-k", type=int, default=None)
    teachers.add_argument("--max-tokens", type=int, default=8192, help="max new tokens per sample")
    teachers.add_argument("--seed", type=int, default=0)
    teachers.add_argument(
        "--teacher-system-prompt", default=None, help="system prompt for the teachers (default: the paper's)"
    )
    teachers.add_argument("--tensor-parallel-size", type=int, default=None, help="vLLM, for every teacher")
    teachers.add_argument("--gpu-memory-utilization", type=float, default=None, help="vLLM, for every teacher")
    teachers.add_argument("--max-model-len", type=int, default=None, help="vLLM, for every teacher")

    run = parser.add_argument_group("run")
    run.add_argument(
        "--backend", default="vllm", help="'vllm' (GPU), 'transformers' (CPU/GPU, slow) or 'module:factory'"
    )
    run.add_argument("--device", default="cpu", help="transformers backend: torch device")
    run.add_argument("--dtype", default=None, help="transformers backend: torch dtype (e.g. bfloat16)")
    run.add_argument("--output-dir", required=True, help="generations/, pool.parquet and build_summary.json go here")
    run.add_argument("--output", default=None, help="pool parquet path (default: OUTPUT_DIR/pool.parquet)")
    run.add_argument("--push-to-hub", default=None, metavar="REPO_ID", help="also push the pool to this hub dataset")
    run.add_argument("--private", action="store_true", help="with --push-to-hub: create a private dataset")
    run.add_argument(
        "--composition",
        action="append",
        default=[],
        metavar="A,B",
        help="repeatable: keep only questions with a solution from at least one teacher of every composition",
    )
    run.add_argument("--keep-unsolved", action="store_true", help="keep questions no teacher solved (empty pools)")
    run.add_argument(
        "--only", action="append", default=[], metavar="NAME", help="generate only these teachers, do not assemble"
    )
    run.add_argument("--chunk-size", type=int, default=None, help="questions per generation call (vllm 512, else 8)")
    run.add_argument("--verify-timeout", type=float, default=5.0, help="Math-Verify time limit per answer (s)")
    run.add_argument("--no-normalize", action="store_true", help="keep \\boxed{} outputs as they are")
    run.add_argument("--no-prefer-formatted", action="store_true", help="pick the shortest correct sample only")
    run.add_argument(
        "--student-system-prompt", default=SYSTEM_PROMPT, help="system message of the pool's prompts ('' for none)"
    )
    run.add_argument("--no-progress", action="store_true", help="no tqdm bars")
    return parser


def teachers_from_args(args) -> list[TeacherSpec]:
    defaults: dict[str, Any] = {
        "n": args.n,
        "temperature": args.temperature,
        "top_p": args.top_p,
        "top_k": args.top_k,
        "max_tokens": args.max_tokens,
        "seed": args.seed,
    }
    if args.teacher_system_prompt is not None:
        defaults["system_prompt"] = args.teacher_system_prompt
    for option, key in (
        ("tensor_parallel_size", "vllm.tensor_parallel_size"),
        ("gpu_memory_utilization", "vllm.gpu_memory_utilization"),
        ("max_model_len", "vllm.max_model_len"),
    ):
        if getattr(args, option) is not None:
            defaults[key] = getattr(args, option)
    teachers = [parse_teacher(spec, defaults) for spec in args.teacher]
    if args.teachers_file:
        teachers += load_teachers_file(args.teachers_file, defaults)
    if not teachers:
        raise SystemExit("No teacher given: use --teacher SPEC (repeatable) or --teachers-file FILE.")
    return teachers


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    parser = build_arg_parser(prog)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    teachers = teachers_from_args(args)
    questions, load_counts = load_questions(
        args.questions,
        split=args.split,
        question_column=args.question_column,
        answer_column=args.answer_column,
        limit=args.limit,
    )
    print(
        f"{len(questions)} questions from {args.questions} ("
        + ", ".join(f"{key}: {value}" for key, value in sorted(load_counts.items()))
        + f"); teachers: {', '.join(t.name for t in teachers)}",
        file=sys.stderr,
    )
    backend_options: dict[str, Any] = {}
    if args.backend == "transformers":
        backend_options = {"device": args.device, "dtype": args.dtype}
    result = build_pool(
        questions,
        teachers,
        args.output_dir,
        backend=args.backend,
        backend_options=backend_options,
        compositions=[[name.strip() for name in c.split(",") if name.strip()] for c in args.composition] or None,
        keep_unsolved=args.keep_unsolved,
        only=args.only or None,
        chunk_size=args.chunk_size,
        normalize=not args.no_normalize,
        prefer_formatted=not args.no_prefer_formatted,
        student_system_prompt=args.student_system_prompt,
        verify_timeout=args.verify_timeout,
        output_path=args.output,
        push_to_hub=args.push_to_hub,
        private=args.private,
        progress=not args.no_progress,
    )
    print(result.table())
    if result.dataset is None:
        print(f"Generated for {', '.join(args.only)} only; rerun without --only to assemble the pool.")
        return 0
    counts = result.counts
    print(
        f"\nPool: {counts['pool_rows']} of {counts['questions']} questions kept "
        f"({counts['unsolved_by_all']} solved by no teacher, {counts['dropped_by_intersection']} dropped by the "
        f"composition intersection, {counts['dropped_unsolved']} unsolved dropped)."
    )
    print(result.report.summary())
    if result.output_path:
        print(f"Wrote {result.output_path}")
    if args.push_to_hub:
        print(f"Pushed to https://huggingface.co/datasets/{args.push_to_hub}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
