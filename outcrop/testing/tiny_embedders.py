"""Build tiny sentence-embedding model folders offline: random weights, a locally trained tokenizer,
and the sentence-transformers files (``modules.json``, ``1_Pooling/config.json``,
``sentence_bert_config.json``) a model from the hub carries.

    build_tiny_embedder(path)                                   # BERT, mean pooling, normalized
    build_tiny_embedder(path, family="qwen3", pooling="lasttoken")  # a Qwen3-Embedding-style decoder
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from outcrop.testing.tiny_models import _CORPUS, build_tokenizer

EMBEDDER_FAMILIES = ("bert", "xlm-roberta", "qwen3", "qwen2")
_WORDPIECE_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def build_wordpiece_tokenizer(path: Path, *, vocab_size: int = 512) -> None:
    """Train a BERT-style WordPiece tokenizer ([CLS] text [SEP]) and save it HF-style into ``path``."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size, special_tokens=_WORDPIECE_SPECIALS, show_progress=False
    )
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=512,
    )
    fast.save_pretrained(str(path))


def write_sentence_transformers_files(
    out: Path,
    *,
    dimension: int,
    pooling: str,
    normalize: bool = True,
    max_seq_length: int = 128,
    matryoshka: bool = False,
) -> None:
    """modules.json, 1_Pooling/config.json and sentence_bert_config.json, in the hub's (legacy) format."""
    modules: list[dict[str, Any]] = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    if normalize:
        modules.append(
            {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}
        )
        (out / "2_Normalize").mkdir(exist_ok=True)
    (out / "modules.json").write_text(json.dumps(modules, indent=2) + "\n")
    (out / "1_Pooling").mkdir(exist_ok=True)
    pooling_config = {
        "word_embedding_dimension": dimension,
        "pooling_mode_cls_token": pooling == "cls",
        "pooling_mode_mean_tokens": pooling == "mean",
        "pooling_mode_max_tokens": pooling == "max",
        "pooling_mode_mean_sqrt_len_tokens": False,
        "pooling_mode_weightedmean_tokens": False,
        "pooling_mode_lasttoken": pooling == "lasttoken",
        "include_prompt": True,
    }
    (out / "1_Pooling" / "config.json").write_text(json.dumps(pooling_config, indent=2) + "\n")
    (out / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": max_seq_length, "do_lower_case": False}) + "\n"
    )
    st_config: dict[str, Any] = {"prompts": {}, "default_prompt_name": None, "similarity_fn_name": "cosine"}
    if matryoshka:
        st_config["matryoshka_dimensions"] = [dimension, dimension // 2, dimension // 4]
    (out / "config_sentence_transformers.json").write_text(json.dumps(st_config, indent=2) + "\n")


def build_tiny_embedder(
    path: Path | str,
    *,
    family: str = "bert",
    pooling: str | None = None,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    intermediate_size: int | None = None,
    normalize: bool = True,
    max_seq_length: int = 128,
    matryoshka: bool = False,
    dtype: str = "float32",
    seed: int = 0,
) -> Path:
    """Write a complete sentence-transformers folder into ``path`` (created) and return it."""
    import torch
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    if family not in EMBEDDER_FAMILIES:
        raise ValueError(f"unknown family {family!r}; choose one of {', '.join(EMBEDDER_FAMILIES)}")
    decoder = family in ("qwen2", "qwen3")
    pooling = pooling or ("lasttoken" if decoder else "mean")
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    if decoder:
        build_tokenizer(out, vocab_size=512, chat_template=False)
    else:
        build_wordpiece_tokenizer(out, vocab_size=512)
    tokenizer = AutoTokenizer.from_pretrained(str(out))
    cfg: dict[str, Any] = {
        "model_type": family,
        "hidden_size": hidden_size,
        "intermediate_size": intermediate_size or hidden_size * 2,
        "num_hidden_layers": num_layers,
        "num_attention_heads": num_heads,
        "vocab_size": len(tokenizer),
        "pad_token_id": tokenizer.pad_token_id,
    }
    if decoder:
        cfg.update(
            num_key_value_heads=max(1, num_heads // 2),
            max_position_embeddings=2048,
            rms_norm_eps=1e-6,
            eos_token_id=tokenizer.eos_token_id,
            bos_token_id=tokenizer.bos_token_id,
        )
        if family == "qwen3":
            cfg["head_dim"] = hidden_size // num_heads
    else:
        cfg["max_position_embeddings"] = 514 if family == "xlm-roberta" else 512
        cfg["type_vocab_size"] = 1 if family == "xlm-roberta" else 2
    config = AutoConfig.for_model(**cfg)
    torch.manual_seed(seed)
    model = AutoModel.from_config(config).to(getattr(torch, dtype))
    model.save_pretrained(str(out), safe_serialization=True)
    write_sentence_transformers_files(
        out,
        dimension=hidden_size,
        pooling=pooling,
        normalize=normalize,
        max_seq_length=max_seq_length,
        matryoshka=matryoshka,
    )
    gen = out / "generation_config.json"
    if gen.exists():
        gen.unlink()
    return out
