"""Comprehension scoring on TRL's vLLM engine (server and colocate), against a stand-in that follows vLLM's semantics
(`tests/vllm_stand_in.py`): temperature-independent raw scores equal to the trainer backend's, chunked requests,
too-long candidates skipped and counted, failures raised on every process, sleep mode honoured."""

import math

import pytest
import torch
import vllm_stand_in
from helpers import addition_rows, generate, make_trainer

from ampo_trl.comprehension import ScoringSequence
from ampo_trl.vllm_scoring import fits, gold_logprobs_from_engine, gold_logprobs_from_server, server_max_model_len

VLLM = dict(use_vllm=True, num_replacements=1)


def scores_of(trainer):
    return [(g["row"], g["teacher"], g["score"]) for g in trainer.last_guidance]


def assert_same_decisions(first, second):
    assert [(row, teacher) for row, teacher, _ in first] == [(row, teacher) for row, teacher, _ in second]
    for (_, _, a), (_, _, b) in zip(first, second, strict=True):
        assert a == pytest.approx(b, rel=1e-5, abs=1e-7)


@pytest.mark.parametrize("mode", ["server", "colocate"])
@pytest.mark.parametrize("temperature", [1.0, 0.6])
def test_vllm_scores_equal_the_trainers_at_any_temperature(tmp_path, monkeypatch, mode, temperature):
    stand_in = vllm_stand_in.install(monkeypatch)
    settings = dict(VLLM, vllm_mode=mode, temperature=temperature, comprehension_mean="arithmetic")
    local = make_trainer(tmp_path, **settings)
    generate(local, addition_rows(2))
    remote = make_trainer(tmp_path, comprehension_backend="vllm", **settings)
    generate(remote, addition_rows(2))
    assert len(scores_of(remote)) == 2 and all(0 < score < 1 for _, _, score in scores_of(remote))
    assert_same_decisions(scores_of(local), scores_of(remote))  # same raw (T = 1) scores, so the same ranking
    assert remote._metrics["train"]["ampo/scoring_forwards"][-1] == 0.0  # no training forward for scoring
    engine = stand_in.instances[-1]
    asked = engine.vllm_client.requests if mode == "server" else engine.llm.generate_calls
    assert sum(asked) == 6  # 3 candidates in each of the 2 guided groups, in chunks of at most 8


def test_requests_are_chunked(tmp_path, monkeypatch):
    stand_in = vllm_stand_in.install(monkeypatch)
    trainer = make_trainer(
        tmp_path, comprehension_backend="vllm", vllm_mode="server", comprehension_vllm_chunk_size=4, **VLLM
    )
    generate(trainer, addition_rows(4))
    assert stand_in.instances[-1].vllm_client.requests == [4, 4, 4]  # 12 candidates


def test_too_long_candidates_are_skipped_counted_and_warned(tmp_path, monkeypatch, caplog):
    stand_in = vllm_stand_in.install(monkeypatch, server_options={"max_model_len": 40})
    rows = addition_rows(2)  # the 'verbose' solution makes the longest scoring sequence
    trainer = make_trainer(tmp_path, comprehension_backend="vllm", vllm_mode="server", **VLLM)
    with caplog.at_level("WARNING"):
        generate(trainer, rows)
    skipped = trainer._metrics["train"]["ampo/skipped_scoring_too_long"][-1]
    assert skipped >= 1
    assert "max_model_len" in caplog.text and "comprehension_max_length" in caplog.text
    client = stand_in.instances[-1].vllm_client
    assert sum(client.requests) == 6 - skipped  # never sent, so the server never refused a request
    verbose = [g["score"] for g in trainer.last_guidance if g["teacher"] == "verbose"]
    assert all(score == 0.0 for score in verbose)


def test_the_configured_limit_wins_over_the_server(tmp_path, monkeypatch):
    stand_in = vllm_stand_in.install(
        monkeypatch, server_options={"max_model_len": 4096, "report_max_model_len": False}
    )
    trainer = make_trainer(
        tmp_path, comprehension_backend="vllm", vllm_mode="server", comprehension_max_length=40, **VLLM
    )
    generate(trainer, addition_rows(2))
    assert trainer._metrics["train"]["ampo/skipped_scoring_too_long"][-1] >= 1
    assert sum(stand_in.instances[-1].vllm_client.requests) < 6


def test_a_failing_server_raises_a_clear_error(tmp_path, monkeypatch):
    stand_in = vllm_stand_in.install(monkeypatch)
    trainer = make_trainer(tmp_path, comprehension_backend="vllm", vllm_mode="server", **VLLM)
    stand_in.instances[-1].vllm_client.fail_with = "500, Internal Server Error"
    with pytest.raises(RuntimeError, match="vLLM server failed on the main process: Exception: Request failed: 500"):
        generate(trainer, addition_rows(2))


def test_a_sleeping_colocated_engine_is_woken_with_current_weights_and_put_back_to_sleep(tmp_path, monkeypatch):
    stand_in = vllm_stand_in.install(monkeypatch)
    trainer = make_trainer(
        tmp_path, comprehension_backend="vllm", vllm_mode="colocate", vllm_enable_sleep_mode=True, **VLLM
    )
    generate(trainer, addition_rows(2))
    engine = stand_in.instances[-1]
    assert engine.weight_syncs == 2 and engine._llm_weights_sleeping  # TRL's before generating, AMPO's to score
    assert engine.llm.events == ["wake_up(['kv_cache'])", "sleep(2)"]
    assert len(trainer.last_guidance) == 2


def test_pure_helpers_follow_vllm_semantics(tiny_model_and_tokenizer):
    model, _ = tiny_model_and_tokenizer
    sequence = ScoringSequence(input_ids=[5, 6, 7, 8, 9], answer_start=2, answer_end=4)
    logps = model(input_ids=torch.tensor([sequence.input_ids])).logits[0].float().log_softmax(-1)
    expected = [logps[1, 7].item(), logps[2, 8].item()]
    client = vllm_stand_in.StandInClient(model, max_model_len=6)
    assert gold_logprobs_from_server(client, [sequence], 1, 1)[0] == pytest.approx(expected, abs=1e-6)
    assert server_max_model_len(client) == 6
    assert fits(5, 6) and not fits(6, 6) and fits(10**6, None)
    with pytest.raises(Exception, match="400.*maximum context length is 6"):
        gold_logprobs_from_server(client, [ScoringSequence([1] * 6, 2, 3)], 1, 1)
    import sys
    import types

    sys.modules.setdefault("vllm", types.SimpleNamespace(SamplingParams=vllm_stand_in.StandInSamplingParams))
    llm = vllm_stand_in.StandInLLM(model)
    assert gold_logprobs_from_engine(llm, [sequence, sequence], 1)[1] == pytest.approx(expected, abs=1e-6)
    assert llm.generate_calls == [1, 1]
    # The server's JSON stand-in for -inf comes back as -inf.
    client.get_sequence_logprobs = lambda **kwargs: {"actual_logprobs": [[[-9999.0], [-1.5]]]}
    assert gold_logprobs_from_server(client, [sequence], 1, 1)[0] == [-math.inf, -1.5]


@pytest.mark.distributed
def test_a_server_failure_stops_every_process_instead_of_hanging(tmp_path):
    """Two processes; the server answers the main process with an error: both processes raise it, none waits."""
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    worker = Path(__file__).parent / "distributed" / "vllm_failure_worker.py"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone", str(worker),
        f"--output-dir={tmp_path}",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True
    )
    try:
        output, _ = process.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        pytest.fail(f"the 2-process run hung instead of failing:\n{output[-3000:]}")
    assert process.returncode != 0
    errors = [(tmp_path / f"rank{rank}.error").read_text().split("\n", 1) for rank in (0, 1)]
    assert [message for _, message in errors][0] == errors[1][1]  # the same error on both processes
    assert "Request failed: 500" in errors[1][1]
    assert all(float(seconds) < 60 for seconds, _ in errors)  # stopped at once, not after a collective timeout
