"""Build a multi-guidance pool from a question set and several teacher models (paper, appendix A.1.2).

Pipeline, one teacher at a time:

1. **Questions** (`load_questions`): a hub id or a local ``.jsonl`` / ``.json`` / ``.parquet`` / ``.csv`` file with a
   question (``question``, ``problem`` or ``prompt`` = chat messages) and an answer (``answer``, ``ground_truth``,
   ``reward_model.ground_truth``, ``final_answer`` or the ``\\boxed{}`` of a ``solution``). Each question gets a
   stable id (hash of question and answer), which keys everything below. Rows without a question or an answer are
   skipped and duplicates merged; both are counted.
2. **Generation**: every teacher samples ``n`` solutions per question with the paper's system prompt
   (`ampo_trl.answers.SYSTEM_PROMPT`, per-teacher override), its own chat template and ``chat_template_kwargs``
   (e.g. Qwen3's ``enable_thinking``), and a per-question seed (`derive_seed`). Backends: ``"vllm"`` (GPU;
   `VLLMGenerator`, vLLM imported lazily), ``"transformers"`` (CPU or GPU, slow; `TransformersGenerator`), both thin
   layers over the backends of `ampo_trl.generation` that the evaluation uses too, or any callable
   ``make(teacher) -> generator``.
   Templates that end the prompt with an opened ``<think>`` (DeepSeek-R1-Distill) get that opening prepended to the
   completion, so the stored text is complete.
3. **Normalisation** (`ampo_trl.pool.normalize_solution`): ``<think>…</think>`` + ``\\boxed{x}`` outputs get
   ``<answer>x</answer>`` appended; texts that already have an ``<answer>`` pair are unchanged.
4. **Verification**: ``ampo_trl.answers.extract_answer`` (last ``<answer>`` pair, else last ``\\boxed{}``) and
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

import dataclasses
import json
import logging
import os
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..answers import SYSTEM_PROMPT, answer_format_ok, extract_answer
from ..reporting import format_table
from ..rewards import verify_answers
from .convert import apply_system_prompt
from .questions import Question, load_questions
from .schema import normalize_solution
from .teachers import Completion, TeacherSpec, make_generator_factory
from .validation import length_percentiles, validate_pool_dataset

logger = logging.getLogger(__name__)

MANIFEST_VERSION = 1


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
