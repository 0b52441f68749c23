"""The shared generation backends (`ampo_trl.generation`): transformers on the tiny model (CPU), vLLM with a stand-in
engine (no GPU, no vllm package). The evaluation and the pool builder only add layers on top of these."""

import sys
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import pytest
import torch

from ampo_trl import generation as gen
from ampo_trl.generation import Generation, GenerationRequest, SamplingSettings, TransformersBackend, VLLMBackend


@pytest.fixture(scope="module")
def tiny():
    from ampo_trl.demo.tiny import build_tiny_model_and_tokenizer

    return build_tiny_model_and_tokenizer(seed=0)


@pytest.fixture(scope="module")
def tokenizer(tiny):
    return tiny[1]


def user(text):
    return [{"role": "user", "content": text}]


# ----------------------------------------------------------------------------------------------------------
# Prompts and seeds
# ----------------------------------------------------------------------------------------------------------


def test_prompts_use_the_chat_template_with_its_kwargs_and_add_no_special_tokens():
    from ampo_trl.demo.tiny import build_tiny_tokenizer

    tokenizer = build_tiny_tokenizer()
    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}]
    text = gen.render_prompt(tokenizer, messages)
    assert text == "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n"
    assert tokenizer.decode(gen.render_prompt_ids(tokenizer, messages)) == text
    tokenizer.chat_template += "{% if enable_thinking %}<think>\n{% endif %}"  # a Qwen3-style switch
    assert gen.render_prompt(tokenizer, messages, {"enable_thinking": True}) == text + "<think>\n"
    assert gen.render_prompt(tokenizer, messages) == text

    class BosTokenizer:  # adds a BOS when asked to: the template already wrote one
        chat_template = "{{ bos }}..."

        def apply_chat_template(self, messages, tokenize, add_generation_prompt):
            return "<s>" + messages[-1]["content"]

        def __call__(self, text, add_special_tokens=True):
            return {"input_ids": [1] * add_special_tokens + [ord(c) for c in text]}

    assert gen.render_prompt_ids(BosTokenizer(), user("hi")) == [ord(c) for c in "<s>hi"]
    tokenizer.chat_template = None
    with pytest.raises(ValueError, match="has no chat template"):
        gen.render_prompt(tokenizer, messages)


def test_derive_seed_is_stable_and_keyed():
    seed = gen.derive_seed(3, "q1")
    assert seed == gen.derive_seed(3, "q1") == gen.derive_seed(3, SimpleNamespace(id="q1"))
    assert len({seed, gen.derive_seed(4, "q1"), gen.derive_seed(3, "q2")}) == 3
    assert 0 <= seed < 2**32


# ----------------------------------------------------------------------------------------------------------
# transformers
# ----------------------------------------------------------------------------------------------------------


def test_transformers_left_padding_batched_equals_single(tiny):
    model, tokenizer = tiny
    prompts = [gen.render_prompt_ids(tokenizer, user(q)) for q in ("What is 2+2?", "A much longer question here?")]
    requests = [GenerationRequest(ids, 1) for ids in prompts]
    greedy = SamplingSettings(temperature=0.0, max_new_tokens=12)
    batched = TransformersBackend(model, tokenizer, batch_size=2, progress=False).generate(requests, greedy)
    single = TransformersBackend(model, tokenizer, batch_size=1, progress=False).generate(requests, greedy)
    assert [[g.text for g in row] for row in batched] == [[g.text for g in row] for row in single]
    assert all(g.num_tokens <= 12 for row in batched for g in row)
    sampled = TransformersBackend(model, tokenizer, batch_size=4, progress=False)
    first = sampled.generate([GenerationRequest(prompts[0], 3)], SamplingSettings(max_new_tokens=8, seed=1))
    again = sampled.generate([GenerationRequest(prompts[0], 3)], SamplingSettings(max_new_tokens=8, seed=1))
    assert len(first[0]) == 3 and [g.text for g in first[0]] == [g.text for g in again[0]]  # seeded per call


def test_transformers_end_of_response(tiny):
    model, tokenizer = tiny
    backend = TransformersBackend(model, tokenizer, progress=False)
    a, b = tokenizer.encode("ab")
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    assert eos != pad and backend.eos_ids == [eos] and backend.pad_id == pad
    assert backend._to_generation([a, b, eos, pad, pad]) == Generation("ab", 3, "stop")
    assert backend._to_generation([a, pad, pad]) == Generation("a", 2, "stop")  # a sampled pad ends it like EOS
    assert backend._to_generation([a, b, a]) == Generation("aba", 3, "length")


def test_transformers_per_request_seeds_do_not_depend_on_the_other_requests(tiny):
    model, tokenizer = tiny
    backend = TransformersBackend(model, tokenizer, batch_size=2, progress=False)
    short, long = (gen.render_prompt_ids(tokenizer, user(q)) for q in ("1+1?", "What is the sum of 12 and 30?"))
    a, b = GenerationRequest(short, 3, seed=11), GenerationRequest(long, 2, seed=12)
    unseeded = GenerationRequest(long, 2)
    settings = SamplingSettings(temperature=1.0, max_new_tokens=8, seed=0)
    torch.manual_seed(123)
    expected_draw = torch.rand(1)
    torch.manual_seed(123)
    alone = backend.generate([a], settings)[0]
    assert torch.equal(torch.rand(1), expected_draw)  # the caller's RNG stream is untouched
    mixed = backend.generate([b, unseeded, a], settings)
    assert mixed[2] == alone  # neither the other requests nor the order change a seeded request's samples
    assert backend.generate([b], settings)[0] == mixed[0]
    assert backend.generate([a], SamplingSettings(temperature=1.0, max_new_tokens=8, seed=99))[0] == alone
    reseeded = backend.generate([GenerationRequest(short, 3, seed=13)], settings)[0]
    assert [g.text for g in reseeded] != [g.text for g in alone]
    assert len({g.text for g in alone}) > 1  # the samples of one request differ from each other


def test_transformers_sampling_options_reach_generate(tiny, monkeypatch):
    model, tokenizer = tiny
    calls = []
    original = model.generate

    def spy(**kwargs):
        calls.append(kwargs)
        return original(**kwargs)

    monkeypatch.setattr(model, "generate", spy)
    backend = TransformersBackend(model, tokenizer, batch_size=2, progress=False)
    ids = gen.render_prompt_ids(tokenizer, user("Hi"))
    backend.generate([GenerationRequest(ids, 5, seed=1)], SamplingSettings(0.7, 0.9, 3))
    assert [call["input_ids"].shape[0] for call in calls] == [2, 2, 1]  # batch_size sequences per call
    options = {key: calls[0][key] for key in ("do_sample", "temperature", "top_p", "top_k", "repetition_penalty")}
    assert options == {"do_sample": True, "temperature": 0.7, "top_p": 0.9, "top_k": 0, "repetition_penalty": 1.0}
    assert calls[0]["max_new_tokens"] == 3 and calls[0]["eos_token_id"] == backend.eos_ids
    backend.generate([GenerationRequest(ids, 1)], SamplingSettings(top_k=20, max_new_tokens=2))
    assert calls[-1]["top_k"] == 20
    backend.generate([GenerationRequest(ids, 1)], SamplingSettings(temperature=0.0, max_new_tokens=2))
    assert calls[-1]["do_sample"] is False and "temperature" not in calls[-1]  # greedy
    backend.close()
    assert backend.model is None


def test_make_backend_loads_a_checkpoint_and_ignores_the_other_backends_options(tiny_model_dir):
    backend = gen.make_backend(
        "transformers", tiny_model_dir, batch_size=3, device="cpu", dtype=None, tensor_parallel_size=4, llm=object()
    )
    assert isinstance(backend, TransformersBackend)
    assert backend.describe() == {
        "backend": "transformers",
        "batch_size": 3,
        "device": "cpu",
        "dtype": "torch.float32",
    }
    assert backend.tokenizer.chat_template
    with pytest.raises(ValueError, match="Unknown backend 'sglang'"):
        gen.make_backend("sglang", tiny_model_dir)


# ----------------------------------------------------------------------------------------------------------
# vLLM, with a stand-in engine
# ----------------------------------------------------------------------------------------------------------


class FakeSamplingParams:
    def __init__(self, **kwargs):
        self.kwargs = kwargs
        self.__dict__.update(kwargs)


class FakeLLM:
    """Stands in for vllm.LLM: records calls and returns vLLM-shaped outputs."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.calls = []

    def get_tokenizer(self):
        return self.tokenizer

    def generate(self, prompts, sampling_params, use_tqdm=True):
        self.calls.append((prompts, sampling_params, use_tqdm))
        outputs = []
        for prompt, params in zip(prompts, sampling_params):
            completions = [
                SimpleNamespace(
                    text=f"<answer>{len(prompt['prompt_token_ids'])}</answer>",
                    token_ids=list(range(3 + j)),
                    finish_reason="length" if j == 1 else "stop",
                )
                for j in range(params.n)
            ]
            outputs.append(SimpleNamespace(outputs=completions))
        return outputs


def test_vllm_backend_code_path_with_a_stand_in_engine(tokenizer):
    llm = FakeLLM(tokenizer)
    backend = gen.make_backend("vllm", "some/model", llm=llm, sampling_params_class=FakeSamplingParams, batch_size=8)
    assert isinstance(backend, VLLMBackend) and backend.tokenizer is tokenizer
    requests = [GenerationRequest([1, 2, 3], 2), GenerationRequest([4, 5], 1, seed=7)]
    results = backend.generate(requests, SamplingSettings(temperature=0.6, top_p=1.0, max_new_tokens=99))
    prompts, params, use_tqdm = llm.calls[0]
    assert prompts == [{"prompt_token_ids": [1, 2, 3]}, {"prompt_token_ids": [4, 5]}] and use_tqdm is True
    assert [p.kwargs for p in params] == [
        {"n": 2, "temperature": 0.6, "top_p": 1.0, "max_tokens": 99, "repetition_penalty": 1.0},
        {"n": 1, "temperature": 0.6, "top_p": 1.0, "max_tokens": 99, "repetition_penalty": 1.0, "seed": 7},
    ]  # a request's own seed goes to its SamplingParams; top_k only when set
    assert results == [
        [Generation("<answer>3</answer>", 3, "stop"), Generation("<answer>3</answer>", 4, "length")],
        [Generation("<answer>2</answer>", 3, "stop")],
    ]
    backend.generate(requests[:1], SamplingSettings(top_k=20))
    assert llm.calls[-1][1][0].kwargs["top_k"] == 20
    assert backend.generate([], SamplingSettings()) == []
    with pytest.raises(ValueError, match="one engine"):
        VLLMBackend("m", tokenizer, llm=llm, data_parallel_size=2)
    backend.close()
    assert backend.llm is None


def test_vllm_engine_options_and_lazy_import(tokenizer, monkeypatch):
    created = []

    def factory(**kwargs):
        created.append(kwargs)
        return FakeLLM(tokenizer)

    backend = VLLMBackend("org/m", llm_factory=factory, sampling_params_class=FakeSamplingParams, seed=3,
                          gpu_memory_utilization=0.5, progress=False,
                          llm_kwargs={"tensor_parallel_size": 2, "gpu_memory_utilization": 0.8})  # fmt: skip
    # None options are vLLM's defaults (not passed); llm_kwargs win over the named options
    assert created == [{"model": "org/m", "seed": 3, "gpu_memory_utilization": 0.8, "tensor_parallel_size": 2}]
    assert backend.tensor_parallel_size == 2 and backend.tokenizer is tokenizer
    backend.generate([GenerationRequest([1], 1)], SamplingSettings())
    assert backend.llm.calls[0][2] is False  # progress=False: no tqdm bar
    VLLMBackend("org/m", "org/tok", llm_factory=factory, tensor_parallel_size=1, max_model_len=4096)
    assert created[-1] == {"model": "org/m", "tokenizer": "org/tok", "tensor_parallel_size": 1,
                           "max_model_len": 4096, "seed": 0}  # fmt: skip

    monkeypatch.setitem(sys.modules, "vllm", None)  # as if vLLM were not installed
    with pytest.raises(ImportError, match=r"pip install 'ampo-trl\[vllm\]'.*--backend transformers"):
        VLLMBackend("org/m")
    injected = VLLMBackend("org/m", llm=FakeLLM(tokenizer))  # an engine, but SamplingParams still from vllm
    with pytest.raises(ImportError, match="ampo-trl"):
        injected.generate([GenerationRequest([1], 1)], SamplingSettings())


def fake_shard_worker(payload):
    """Answers each request with its shard's GPUs, prompt length and seed (what a spawned vLLM engine would do)."""
    return [
        [{"text": f"{payload['devices']}|{len(r['prompt_ids'])}|{r['seed']}", "num_tokens": r["num_samples"],
          "finish_reason": "stop"}] * r["num_samples"]
        for r in payload["requests"]
    ]  # fmt: skip


def test_vllm_data_parallel_shards_devices_and_merges_in_order(tokenizer, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3,4,5,6,7")
    backend = VLLMBackend(
        "some/model",
        tokenizer,
        tensor_parallel_size=2,
        data_parallel_size=4,
        shard_worker=fake_shard_worker,
        executor_factory=lambda workers: ThreadPoolExecutor(workers),
    )
    requests = [GenerationRequest([0] * (i + 1), 2, seed=100 + i if i % 2 else None) for i in range(10)]
    results = backend.generate(requests, SamplingSettings())
    assert [len(row) for row in results] == [2] * 10
    fields = [row[0].text.split("|") for row in results]
    assert [int(f[1]) for f in fields] == list(range(1, 11))  # order kept
    assert [f[2] for f in fields] == [str(100 + i) if i % 2 else "None" for i in range(10)]  # seeds travel along
    groups = [f[0] for f in fields]
    assert set(groups) == {"0,1", "2,3", "4,5", "6,7"} and groups == sorted(groups)  # contiguous shards
    assert gen._split_contiguous([1] * 10, 4) == [(0, 2), (2, 5), (5, 7), (7, 10)]
    assert gen._split_contiguous([5, 1, 1], 3) == [(0, 1), (1, 2), (2, 3)]
    assert gen._split_contiguous([1], 3) == [(0, 0), (0, 0), (0, 1)]  # empty shards start no engine
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    with pytest.raises(ValueError, match="needs 8 GPUs"):
        backend.generate(requests, SamplingSettings())
