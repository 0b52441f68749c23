"""The pool builder end to end: stand-in teachers (selection, verification, intersection, resume), the vLLM path with
a stand-in LLM, the real transformers backend on the tiny model, the command line and the SFT export."""

import json
import re
from types import SimpleNamespace

import pytest
from datasets import Dataset

from ampo_trl.answers import SYSTEM_PROMPT
from ampo_trl.cli.build_pool import main
from ampo_trl.generation import derive_seed
from ampo_trl.pool import export_sft_dataset, validate_pool_dataset
from ampo_trl.pool.builder import ManifestMismatchError, build_pool, read_generations
from ampo_trl.pool.questions import load_questions
from ampo_trl.pool.teachers import Completion, TeacherSpec, VLLMGenerator, load_teachers_file, parse_teacher


@pytest.fixture(autouse=True)
def verify_in_process(monkeypatch):
    monkeypatch.setenv("AMPO_VERIFY_IN_PROCESS", "1")  # Math-Verify in this process: no worker start-up


QUESTION_ROWS = [
    {"question": "What is 2+3?", "answer": "5"},
    {"question": "What is 7*6?", "answer": "42"},
    {"problem": "What is 1/2+1/4?", "answer": "\\frac{3}{4}"},
    {"question": "Name the largest prime.", "answer": "99"},
]

# Samples of the two stand-in teachers, keyed by the answer of the question: (text, tokens, finish_reason)
SCRIPT = {
    "alpha": {
        "5": [
            ("<answer>4</answer>", 3, "stop"),
            ("long and careful: 2+3 <answer>5</answer>", 9, "stop"),
            ("<think>2+3</think><answer>5</answer>", 6, "stop"),
        ],
        "42": [
            ("<think>\n6*7\n</think>\n\nThe product is \\boxed{42}.", 12, "stop"),
            ("<answer>41</answer>", 3, "stop"),
            ("<answer>40</answer>", 3, "stop"),
        ],
        "\\frac{3}{4}": [
            ("<answer>0.75</answer>", 4, "stop"),
            ("<answer>3/5</answer>", 4, "stop"),
            ("<answer>0.7</answer>", 4, "stop"),
        ],
        "99": [("<answer>97</answer>", 3, "stop")] * 3,
    },
    "beta": {
        "5": [
            ("<answer>5</answer><answer>5</answer>", 4, "stop"),
            ("It is <answer>5</answer>", 5, "stop"),
            ("<answer>6</answer>", 3, "stop"),
        ],
        "42": [("<answer>24</answer>", 3, "stop")] * 3,
        "\\frac{3}{4}": [
            ("<answer>3/4</answer>", 4, "length"),
            ("<answer>1</answer>", 3, "stop"),
            ("<answer>2</answer>", 3, "stop"),
        ],
        "99": [("no idea", 2, "stop")] * 3,
    },
}


class StandInTeacher:
    """A deterministic "teacher": answers from SCRIPT, records what it was asked."""

    calls: list = []  # (teacher, question ids) of every generate call, across instances
    fail_after: int | None = None  # raise on the call after this many calls (a crash mid-run)

    def __init__(self, teacher: TeacherSpec):
        self.teacher = teacher
        StandInTeacher.instances.append(teacher.name)

    instances: list = []

    def generate(self, messages, questions, n):
        if StandInTeacher.fail_after is not None and len(StandInTeacher.calls) >= StandInTeacher.fail_after:
            raise RuntimeError("simulated crash")
        StandInTeacher.calls.append((self.teacher.name, [q.id for q in questions]))
        for message_list, question in zip(messages, questions):
            assert message_list == [
                {"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": question.question},
            ]
        return [
            [Completion(text, tokens, finish) for text, tokens, finish in SCRIPT[self.teacher.name][q.answer][:n]]
            for q in questions
        ]

    def close(self):
        pass


def make_stand_in(teacher):
    return StandInTeacher(teacher)


@pytest.fixture(autouse=True)
def reset_stand_in():
    StandInTeacher.calls, StandInTeacher.instances, StandInTeacher.fail_after = [], [], None


def teachers(n=3):
    return [
        TeacherSpec(model="stand-in/alpha", name="alpha", n=n),
        TeacherSpec(model="stand-in/beta", name="beta", n=n),
    ]


def questions_file(tmp_path):
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "questions.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in QUESTION_ROWS + [{"question": "", "answer": "1"}]))
    return path


def build(tmp_path, **kwargs):
    questions, counts = load_questions(questions_file(tmp_path))
    assert counts == {"rows": 5, "missing_question": 1, "questions": 4}
    options = dict(backend=make_stand_in, chunk_size=1, progress=False)
    options.update(kwargs)
    return build_pool(questions, teachers(), tmp_path / "out", **options)


# -------------------------------------------------------------------------------------- selection and verification


def pool_by_answer(dataset):
    return {
        row["answer"]: {e["teacher"]: (e["text"], e["length"]) for e in row["teacher_solutions"]} for row in dataset
    }


def test_shortest_correct_solution_per_teacher_is_selected_and_verified(tmp_path):
    result = build(tmp_path)
    pools = pool_by_answer(result.dataset)
    assert pools == {
        "5": {
            "alpha": ("<think>2+3</think><answer>5</answer>", 6),  # shortest of the two correct ones
            "beta": ("It is <answer>5</answer>", 5),  # a shorter correct one has two answer pairs
        },
        "42": {  # normalised from \boxed{} and verified
            "alpha": ("<think>\n6*7\n</think>\n\nThe product is \\boxed{42}.\n\n<answer>42</answer>", 12)
        },
        "\\frac{3}{4}": {"alpha": ("<answer>0.75</answer>", 4)},  # Math-Verify: 0.75 == 3/4; beta's is truncated
    }
    assert result.counts["unsolved_by_all"] == 1 and result.counts["dropped_unsolved"] == 1
    row = result.dataset[0]
    assert row["prompt"] == [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": "What is 2+3?"}]
    assert row["question"] == "What is 2+3?" and len(row["question_id"]) == 16
    assert result.report.ok and result.report.num_warnings == 0
    stats = {s.teacher: s for s in result.teacher_stats}
    assert (stats["alpha"].samples, stats["alpha"].correct_samples, stats["alpha"].solved_questions) == (12, 4, 3)
    assert (stats["beta"].correct_samples, stats["beta"].truncated_samples, stats["beta"].solved_questions) == (
        3,
        1,
        1,
    )
    assert stats["alpha"].normalized_samples == 1 and stats["alpha"].kept_lengths == [6, 12, 4]
    table = result.table()
    assert re.search(r"alpha +4 +4 +12 +33\.3% +3 +75\.0% +0 +7\.33 +6(\.0)? +12", table), table
    assert re.search(r"beta +4 +4 +12 +25\.0% +1 +25\.0% +1 +5(\.0)? +5(\.0)? +5", table), table
    # written: parquet, per-teacher generations, summary
    written = Dataset.from_parquet(str(tmp_path / "out" / "pool.parquet"))
    assert written["teacher_solutions"] == result.dataset["teacher_solutions"]
    summary = json.loads((tmp_path / "out" / "build_summary.json").read_text())
    assert summary["counts"]["pool_rows"] == 3 and summary["teachers"][0]["kept_length_percentiles"]["max"] == 12
    records, _ = read_generations(tmp_path / "out" / "generations" / "alpha.jsonl")
    normalised = [s for r in records.values() for s in r["samples"] if "raw" in s]
    assert [s["raw"] for s in normalised] == ["<think>\n6*7\n</think>\n\nThe product is \\boxed{42}."]


def test_intersection_over_teacher_compositions(tmp_path):
    both = build(tmp_path, compositions=[["alpha"], ["beta"]])
    assert both.dataset["answer"] == ["5"]  # only question solved by alpha and by beta
    assert both.counts["dropped_by_intersection"] == 2 and both.counts["pool_rows"] == 1
    either = build(tmp_path, compositions=[["alpha", "beta"]])  # resumes: nothing is generated again
    assert either.dataset["answer"] == ["5", "42", "\\frac{3}{4}"]
    keep_all = build(tmp_path, keep_unsolved=True)
    assert keep_all.dataset["answer"][-1] == "99" and keep_all.dataset["teacher_solutions"][-1] == []
    assert len(StandInTeacher.calls) == 8  # 4 questions x 2 teachers, generated once for the three builds
    with pytest.raises(ValueError, match=r"unknown teachers \['gamma'\]"):
        build(tmp_path, compositions=[["alpha"], ["gamma"]])


# ----------------------------------------------------------------------------------------------------------- resume


def test_resume_after_an_interruption_generates_only_the_missing_questions(tmp_path):
    reference = build(tmp_path / "reference").dataset

    StandInTeacher.calls = []
    StandInTeacher.fail_after = 6  # alpha finishes its 4 questions, beta crashes after 2
    with pytest.raises(RuntimeError, match="simulated crash"):
        build(tmp_path)
    beta_file = tmp_path / "out" / "generations" / "beta.jsonl"
    assert len(beta_file.read_text().splitlines()) == 2
    manifest = json.loads((tmp_path / "out" / "generations" / "beta.manifest.json").read_text())
    assert manifest["status"] == "running" and manifest["questions_done"] == 2
    with open(beta_file, "a") as handle:  # a crash in the middle of a write leaves a torn line
        handle.write('{"id": "0123456789abcdef", "samples": [{"te')

    StandInTeacher.calls, StandInTeacher.instances, StandInTeacher.fail_after = [], [], None
    resumed = build(tmp_path)
    assert StandInTeacher.instances == ["beta"]  # alpha was complete: not even loaded
    assert [len(ids) for _, ids in StandInTeacher.calls] == [1, 1]  # beta: only its 2 missing questions
    assert resumed.dataset.to_list() == reference.to_list()
    assert beta_file.read_text().endswith("\n") and len(beta_file.read_text().splitlines()) == 4
    assert json.loads((tmp_path / "out" / "generations" / "beta.manifest.json").read_text())["status"] == "done"

    StandInTeacher.calls = []
    again = build(tmp_path)
    assert StandInTeacher.calls == [] and again.dataset.to_list() == reference.to_list()
    assert {s.teacher: s.skipped for s in again.teacher_stats} == {"alpha": True, "beta": True}
    # statistics come from the stored generations: only what this run generated differs
    run_only = ("generated_now", "resumed", "skipped")
    assert [{k: v for k, v in s.to_dict().items() if k not in run_only} for s in again.teacher_stats] == [
        {k: v for k, v in s.to_dict().items() if k not in run_only} for s in resumed.teacher_stats
    ]
    assert re.search(r"beta +4 +0 +12 +25\.0%", again.table()) and re.search(r"beta +4 +2 +12", resumed.table())


def test_changed_settings_are_refused_on_resume(tmp_path):
    build(tmp_path)
    questions, _ = load_questions(questions_file(tmp_path))
    changed = [TeacherSpec(model="stand-in/alpha", name="alpha", n=2)]
    with pytest.raises(ManifestMismatchError, match=r"'alpha'.*n: stored 3, now 2.*another --output-dir"):
        build_pool(questions, changed, tmp_path / "out", backend=make_stand_in, progress=False)


def test_only_generates_some_teachers_for_parallel_runs(tmp_path):
    questions, _ = load_questions(questions_file(tmp_path))
    partial = build_pool(questions, teachers(), tmp_path / "out", backend=make_stand_in, only=["beta"], progress=False)
    assert partial.dataset is None and StandInTeacher.instances == ["beta"]
    assert not (tmp_path / "out" / "pool.parquet").exists()
    full = build_pool(questions, teachers(), tmp_path / "out", backend=make_stand_in, progress=False)
    assert StandInTeacher.instances == ["beta", "alpha"] and len(full.dataset) == 3


# ----------------------------------------------------------------------------------------------- teachers and CLI


def test_teacher_specs_from_the_command_line_and_from_a_file(tmp_path):
    spec = parse_teacher(
        "name=Qwen3-8B,model=Qwen/Qwen3-8B,n=4,enable_thinking=true,vllm.max_model_len=12288,template.foo=bar",
        defaults={"temperature": 0.7, "n": 8},
    )
    assert (spec.name, spec.model, spec.n, spec.temperature) == ("Qwen3-8B", "Qwen/Qwen3-8B", 4, 0.7)
    assert spec.chat_template_kwargs == {"enable_thinking": True, "foo": "bar"}
    assert spec.llm_kwargs == {"max_model_len": 12288}
    assert parse_teacher("deepseek-ai/DeepSeek-R1-Distill-Qwen-7B").name == "DeepSeek-R1-Distill-Qwen-7B"
    with pytest.raises(ValueError, match="Unknown teacher option 'temprature'"):
        parse_teacher("model=x,temprature=1")
    path = tmp_path / "teachers.yaml"
    path.write_text("- model: Qwen/Qwen3-8B\n  chat_template_kwargs: {enable_thinking: true}\n- model: a/b\n  n: 2\n")
    loaded = load_teachers_file(path, defaults={"max_new_tokens": 100})
    assert [(t.name, t.n, t.max_new_tokens, t.chat_template_kwargs) for t in loaded] == [
        ("Qwen3-8B", 8, 100, {"enable_thinking": True}),
        ("b", 2, 100, {}),
    ]


def test_command_line_builds_validates_and_exports_sft(tmp_path, capsys):
    questions = questions_file(tmp_path)
    argv = ["--questions", str(questions), "--teacher", "name=alpha,model=stand-in/alpha", "--teacher",
            "name=beta,model=stand-in/beta", "--n", "3", "--backend", "test_build_pool:make_stand_in", "--output-dir",
            str(tmp_path / "out"), "--composition", "alpha", "--composition", "beta", "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "Pool: 1 of 4 questions kept (1 solved by no teacher, 2 dropped by the composition intersection" in out
    assert "Wrote " in out and re.search(r"alpha +4 +4 +12 +33\.3%", out)
    dataset = Dataset.from_parquet(str(tmp_path / "out" / "pool.parquet"))
    assert validate_pool_dataset(dataset).ok
    sft = export_sft_dataset(dataset, system_prompt=SYSTEM_PROMPT)
    assert len(sft) == 2 and sft["teacher"] == ["alpha", "beta"]  # the 32k-row SFT baseline, in miniature
    assert sft[1]["messages"][2] == {"role": "assistant", "content": "It is <answer>5</answer>"}


# ---------------------------------------------------------------------------------------------------------- vLLM


class FakeTokenizer:
    """One token per character; records the chat-template kwargs it was given."""

    chat_template = "<role>content..."

    def __init__(self, ends_in_think):
        self.ends_in_think, self.calls = ends_in_think, []

    def apply_chat_template(self, messages, tokenize, add_generation_prompt, **kwargs):
        self.calls.append(kwargs)
        assert tokenize is False and add_generation_prompt is True
        text = "".join(f"<{m['role']}>{m['content']}" for m in messages) + "<assistant>"
        return text + ("<think>\n" if self.ends_in_think else "")

    def __call__(self, text, add_special_tokens):
        assert add_special_tokens is False  # the template wrote the whole prompt
        return {"input_ids": [ord(c) for c in text]}


class FakeLLM:
    """Stands in for vllm.LLM: records its arguments, returns canned completions."""

    created: list = []

    def __init__(self, **kwargs):
        self.kwargs = kwargs
        self.tokenizer = FakeTokenizer(ends_in_think="distill" in kwargs["model"])
        FakeLLM.created.append(self)

    def get_tokenizer(self):
        return self.tokenizer

    def generate(self, prompts, params, use_tqdm):
        prompts = ["".join(map(chr, prompt["prompt_token_ids"])) for prompt in prompts]  # token ids, not text
        self.prompts, self.params = prompts, params
        answer = {"What is 2+3?": "5", "What is 7*6?": "42"}
        outputs = []
        for prompt, param in zip(prompts, params):
            gold = next(value for key, value in answer.items() if key in prompt)
            samples = [
                SimpleNamespace(text=f"thinking {i}\n</think>\n\n\\boxed{{{gold if i else 0}}}",
                                token_ids=[1] * (5 + i), finish_reason="stop")
                for i in range(param.kwargs["n"])
            ]  # fmt: skip
            outputs.append(SimpleNamespace(outputs=samples))
        return outputs


class FakeSamplingParams:
    def __init__(self, **kwargs):
        self.kwargs = kwargs


def test_vllm_path_with_a_stand_in_llm(tmp_path):
    FakeLLM.created = []
    questions, _ = load_questions(QUESTION_ROWS[:2])
    distill = TeacherSpec(model="org/distill-7b", name="distill", n=2, max_new_tokens=64, seed=3,
                          llm_kwargs={"tensor_parallel_size": 2})  # fmt: skip
    qwen3 = TeacherSpec(model="Qwen/Qwen3-8B", n=2, chat_template_kwargs={"enable_thinking": True}, top_k=20)
    result = build_pool(
        questions,
        [distill, qwen3],
        tmp_path / "out",
        backend="vllm",
        backend_options={"llm_factory": FakeLLM, "sampling_params_factory": FakeSamplingParams},
        progress=False,
    )
    first, second = FakeLLM.created
    assert first.kwargs == {"model": "org/distill-7b", "seed": 3, "tensor_parallel_size": 2}
    assert first.tokenizer.calls == [{}, {}] and second.tokenizer.calls == [{"enable_thinking": True}] * 2
    assert [p.kwargs for p in first.params] == [
        {"n": 2, "temperature": 0.6, "top_p": 0.95, "max_tokens": 64, "repetition_penalty": 1.0,
         "seed": derive_seed(3, q)} for q in questions
    ]  # fmt: skip
    assert second.params[0].kwargs["top_k"] == 20 and "top_k" not in first.params[0].kwargs
    assert first.prompts[0].startswith(f"<system>{SYSTEM_PROMPT}<user>What is 2+3?")
    pools = pool_by_answer(result.dataset)
    # the distill template opened <think> in the prompt: the stored text starts with it, then gets an answer tag
    assert pools["5"]["distill"] == ("<think>\nthinking 1\n</think>\n\n\\boxed{5}\n\n<answer>5</answer>", 6)
    assert pools["42"]["Qwen3-8B"] == ("<think>\nthinking 1\n</think>\n\n\\boxed{42}\n\n<answer>42</answer>", 6)
    assert result.report.ok and result.report.num_warnings == 0


def test_vllm_backend_explains_how_to_install(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "vllm", None)  # as if vLLM were not installed
    with pytest.raises(ImportError, match=r"pip install 'ampo-trl\[vllm\]'.*--backend transformers"):
        VLLMGenerator(TeacherSpec(model="x"))


# ----------------------------------------------------------------------------------------------- transformers, CPU


def test_transformers_backend_runs_the_tiny_model_on_cpu(tmp_path, tiny_model_dir):
    from ampo_trl.demo.tiny import tiny_model_path

    second_seed = str(tiny_model_path(seed=1, cache_dir=tmp_path / "tiny-cache"))
    questions, _ = load_questions(QUESTION_ROWS[:2])
    specs = [TeacherSpec(model=tiny_model_dir, name="tiny-0", n=2, max_new_tokens=6),
             TeacherSpec(model=second_seed, name="tiny-1", n=2, max_new_tokens=6)]  # fmt: skip
    result = build_pool(questions, specs, tmp_path / "out", backend="transformers", keep_unsolved=True, progress=False)
    assert len(result.dataset) == 2  # a random model solves nothing: kept as empty pools because keep_unsolved
    texts = {}
    for spec in specs:
        records, _ = read_generations(tmp_path / "out" / "generations" / f"{spec.name}.jsonl")
        assert set(records) == {q.id for q in questions}
        samples = [s for q in questions for s in records[q.id]["samples"]]
        assert len(samples) == 4
        assert all(1 <= s["tokens"] <= 6 and s["finish"] in ("stop", "length") for s in samples)
        assert all(s["correct"] is False for s in samples)
        texts[spec.name] = [s["text"] for s in samples]
    assert texts["tiny-0"] != texts["tiny-1"]  # two different "teachers"
    # per-question seeds: generating again (fresh directory, chunked differently) gives the same samples
    build_pool(questions, specs[:1], tmp_path / "again", backend="transformers", chunk_size=1, keep_unsolved=True,
               progress=False)  # fmt: skip
    again, _ = read_generations(tmp_path / "again" / "generations" / "tiny-0.jsonl")
    assert [s["text"] for q in questions for s in again[q.id]["samples"]] == texts["tiny-0"]
