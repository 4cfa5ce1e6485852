"""Tiny randomly initialised models for tests: real architectures (Llama, GPT-NeoX) at toy sizes,
with a byte-level tokenizer, built in-process in milliseconds.

`load_model("tiny-llama")` still builds them, so the CLI and service processes under test
(PROTOTOK_MODEL=tiny-llama) need no files; but they are not `known_models()`, and an API decodes
with one only when its settings name it (PROTOTOK_MODEL, PROTOTOK_API_DECODE_MODELS).
"""

from __future__ import annotations

import torch
from transformers import (
    AutoModelForCausalLM,
    GPTNeoXConfig,
    LlamaConfig,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerFast,
)

TINY_MODELS = ("tiny-llama", "tiny-gpt-neox")


def byte_tokenizer() -> PreTrainedTokenizerFast:
    """A 257-token byte-level tokenizer: round-trips any text, builds in milliseconds."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {ch: i for i, ch in enumerate(alphabet)}
    vocab["<|endoftext|>"] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>", pad_token="<|endoftext|>"
    )


def tiny_config(name: str) -> PretrainedConfig:
    """Configs of the tiny test models: real architectures, toy sizes."""
    common = {"vocab_size": 257, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
              "max_position_embeddings": 1024, "bos_token_id": 256, "eos_token_id": 256}
    if name == "tiny-llama":
        return LlamaConfig(intermediate_size=64, num_key_value_heads=2, tie_word_embeddings=True, **common)
    return GPTNeoXConfig(intermediate_size=64, **common)


def build_tiny(name: str) -> tuple[PreTrainedModel, PreTrainedTokenizerFast]:
    """The same weights in every process (seed 0), without touching the caller's random state."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(tiny_config(name))
    return model, byte_tokenizer()
