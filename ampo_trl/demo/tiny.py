"""Offline tiny model and tokenizer for tests, demos and benchmarks.

Nothing here touches the network. `build_tiny_model_and_tokenizer()` returns

* a byte-level tokenizer with no merges (every byte is one token, so digits and tags are learnable by a model
  with a few hundred thousand parameters), wrapped as a `transformers` fast tokenizer with a Qwen-style chat
  template, `<|im_end|>` as EOS and a separate `<|endoftext|>` pad token; `<answer>`, `</answer>`, `<think>` and
  `</think>` are single, *non-special* tokens so that decoding with `skip_special_tokens=True` keeps them;
* a randomly initialised `Qwen2ForCausalLM` (2 layers, hidden size 128 by default, ~0.1 M parameters outside the
  embeddings), built deterministically from a seed.

`save_tiny_model(path)` writes both to a directory that `AutoModelForCausalLM.from_pretrained` /
`AutoTokenizer.from_pretrained` (and therefore TRL's `GRPOTrainer(model="path")`) can load. `tiny_model_path()`
caches that directory on disk (keyed by the configuration) so repeated runs build it once.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..answers import ANSWER_CLOSE, ANSWER_OPEN, THINK_CLOSE, THINK_OPEN

if TYPE_CHECKING:  # pragma: no cover
    from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast, Qwen2ForCausalLM

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
TAG_TOKENS = [ANSWER_OPEN, ANSWER_CLOSE, THINK_OPEN, THINK_CLOSE]

DEFAULT_MODEL_CONFIG: dict[str, Any] = {
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 2048,
    "tie_word_embeddings": True,
}


def build_tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level tokenizer without merges, with a chat template, pad and EOS (no network, < 1 s)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import AddedToken, PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {symbol: index for index, symbol in enumerate(alphabet)}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], fuse_unk=False))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        bos_token=None,
        chat_template=CHAT_TEMPLATE,
        padding_side="left",
        truncation_side="left",
        model_max_length=DEFAULT_MODEL_CONFIG["max_position_embeddings"],
    )
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>"]})
    # Tags are ordinary (non-special) tokens: TRL decodes completions with skip_special_tokens=True and the
    # rewards must still see them.
    tokenizer.add_tokens([AddedToken(tag, special=False, normalized=False) for tag in TAG_TOKENS])
    return tokenizer


def build_tiny_model(tokenizer: PreTrainedTokenizerBase, seed: int = 0, **config_overrides) -> Qwen2ForCausalLM:
    """A randomly initialised tiny `Qwen2ForCausalLM` matching `tokenizer` (deterministic for a given seed)."""
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    config_kwargs = {**DEFAULT_MODEL_CONFIG, **config_overrides}
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
        **config_kwargs,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(config)
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, bos_token_id=None
    )
    return model


def build_tiny_model_and_tokenizer(
    seed: int = 0, **config_overrides
) -> tuple[Qwen2ForCausalLM, PreTrainedTokenizerFast]:
    """Return `(model, tokenizer)`: the tiny model of this module, built in memory."""
    tokenizer = build_tiny_tokenizer()
    return build_tiny_model(tokenizer, seed=seed, **config_overrides), tokenizer


def save_tiny_model(path: str | os.PathLike, seed: int = 0, **config_overrides) -> Path:
    """Build the tiny model and tokenizer and save both to `path` (loadable with `from_pretrained`)."""
    path = Path(path)
    model, tokenizer = build_tiny_model_and_tokenizer(seed=seed, **config_overrides)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def default_cache_dir() -> Path:
    """`$AMPO_TRL_CACHE` if set, else `~/.cache/ampo_trl`."""
    return Path(os.environ.get("AMPO_TRL_CACHE", Path.home() / ".cache" / "ampo_trl"))


def tiny_model_path(seed: int = 0, cache_dir: str | os.PathLike | None = None, **config_overrides) -> Path:
    """Directory holding the saved tiny model for this seed and configuration, built on first use."""
    key = json.dumps({"seed": seed, **DEFAULT_MODEL_CONFIG, **config_overrides, "format": 1}, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    path = Path(cache_dir or default_cache_dir()) / f"tiny-qwen2-{digest}"
    if not (path / "config.json").exists() or not (path / "tokenizer_config.json").exists():
        # Build in a temporary sibling and rename, so concurrent processes never see a half-written model.
        tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
        save_tiny_model(tmp, seed=seed, **config_overrides)
        try:
            os.replace(tmp, path)
        except OSError:  # another process won the race: keep its copy
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    return path
