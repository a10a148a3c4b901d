"""Build tiny Hugging Face model folders offline: random weights + a locally trained tokenizer.

No model hub is reachable from Outcrop's machines, so the demo, the tests and the
benchmarks make their own models. A folder built here looks exactly like a fine-tuned
model a user would import: ``config.json``, ``*.safetensors``, ``tokenizer.json``,
``tokenizer_config.json`` and (optionally) a chat template.

    build_tiny_model(path, family="qwen2", hidden_size=64, num_layers=2)
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FAMILIES = ("llama", "mistral", "qwen2", "qwen3", "mixtral")

# A ChatML-style template: short, and it exercises system/user/assistant turns.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>", "<|im_start|>", "<|im_end|>"]

# Text the tokenizer is trained on: English, code, Chinese and emoji so that byte-level
# merges cover multi-byte UTF-8 sequences (the streaming tests depend on those).
_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Outcrop imports fine-tuned models and serves them behind Bedrock and OpenAI APIs.",
    "def add(a, b):\n    return a + b\n",
    "Hello, world! How are you today? I am fine, thank you.",
    "Once upon a time there was a little model that wanted to generate text.",
    "你好，世界！今天天气很好。我们一起去公园散步吧。",
    "机器学习模型的推理服务需要快速而且稳定。",
    "Emoji test: 😀 🚀 🎉 👍 ❤️ 🌍 and more 🤖🧠.",
    "SELECT name, value FROM settings WHERE id = 42;",
    "import torch\nx = torch.randn(2, 3)\nprint(x.shape)\n",
]


@dataclass
class TinyModelSpec:
    """What to build. Defaults give a ~100K-parameter model that loads in well under a second."""

    family: str = "llama"
    hidden_size: int = 64
    intermediate_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    vocab_size: int = 512
    max_position_embeddings: int = 2048
    dtype: str = "float32"
    chat_template: bool = True
    tie_word_embeddings: bool = False
    max_shard_size: str | None = None
    seed: int = 0
    extra_config: dict[str, Any] = field(default_factory=dict)


def build_tokenizer(path: Path, *, vocab_size: int = 512, chat_template: bool = True) -> None:
    """Train a byte-level BPE tokenizer on the built-in corpus and save it HF-style into ``path``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="<|im_end|>" if chat_template else "</s>",
        unk_token="<unk>",
        pad_token="<pad>",
    )
    if chat_template:
        fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(str(path))


def _config_dict(
    spec: TinyModelSpec, vocab_size: int, eos_id: int, bos_id: int, pad_id: int
) -> dict[str, Any]:
    head_dim = spec.hidden_size // spec.num_heads
    cfg: dict[str, Any] = {
        "model_type": spec.family,
        "hidden_size": spec.hidden_size,
        "intermediate_size": spec.intermediate_size,
        "num_hidden_layers": spec.num_layers,
        "num_attention_heads": spec.num_heads,
        "num_key_value_heads": spec.num_kv_heads,
        "vocab_size": vocab_size,
        "max_position_embeddings": spec.max_position_embeddings,
        "tie_word_embeddings": spec.tie_word_embeddings,
        "bos_token_id": bos_id,
        "eos_token_id": eos_id,
        "pad_token_id": pad_id,
        "rms_norm_eps": 1e-6,
    }
    if spec.family == "qwen3":
        cfg["head_dim"] = head_dim
    if spec.family == "mixtral":
        cfg["num_local_experts"] = 4
        cfg["num_experts_per_tok"] = 2
    cfg.update(spec.extra_config)
    return cfg


def build_tiny_model(path: Path | str, spec: TinyModelSpec | None = None, **overrides: Any) -> Path:
    """Write a complete model folder into ``path`` (created) and return it."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    spec = spec or TinyModelSpec()
    for key, value in overrides.items():
        setattr(spec, key, value)
    if spec.family not in FAMILIES:
        raise ValueError(f"unknown family {spec.family!r}; choose one of {', '.join(FAMILIES)}")
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)

    build_tokenizer(out, vocab_size=spec.vocab_size, chat_template=spec.chat_template)
    tokenizer = AutoTokenizer.from_pretrained(str(out))
    vocab_size = len(tokenizer)
    cfg_dict = _config_dict(
        spec, vocab_size, tokenizer.eos_token_id, tokenizer.bos_token_id, tokenizer.pad_token_id
    )
    config = AutoConfig.for_model(**cfg_dict)
    torch.manual_seed(spec.seed)
    model = AutoModelForCausalLM.from_config(config)
    model = model.to(getattr(torch, spec.dtype))
    # Random init gives near-uniform logits; scale the output head so greedy decoding
    # produces varied text, which makes the equality tests meaningful.
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(8.0)
    save_kwargs: dict[str, Any] = {"safe_serialization": True}
    if spec.max_shard_size:
        save_kwargs["max_shard_size"] = spec.max_shard_size
    with _quiet_transformers():  # no "Writing model shards" progress bar on the user's terminal
        model.save_pretrained(str(out), **save_kwargs)
    _drop_generation_config_noise(out)
    return out


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


def _drop_generation_config_noise(out: Path) -> None:
    """Keep generation_config.json minimal (transformers writes its version, which varies)."""
    gen = out / "generation_config.json"
    if gen.exists():
        data = json.loads(gen.read_text())
        data.pop("transformers_version", None)
        gen.write_text(json.dumps(data, indent=2) + "\n")
