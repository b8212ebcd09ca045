"""A quantized GGUF generator back as a Hugging Face folder (weights dequantized to F32).

Why: the PRM's likelihood term (edge_adapt_tools/prm/likelihood_prm.py) should read the probabilities of the
generator that actually samples on the device, the quantized one, not of its F32 parent; and a
user who has only the GGUF can still calibrate a PRM for it. transformers reads GGUF Llama and
Qwen2 files and dequantizes them; the tokenizer is taken from the PRM's own tokenizer.json
(checked against the GGUF's vocabulary), since a GGUF's tokenizer does not always convert back.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import gguf
import torch
from tokenizers import Tokenizer
from transformers import AutoModelForCausalLM

from edge_adapt.errors import TokenizerError, UnsupportedModelError
from edge_adapt.files import atomic_write_text
from edge_adapt.models import sha256_of

STAMP = "dequantized_from.json"


def _gguf_tokens(path: Path) -> list[str]:
    field = gguf.GGUFReader(str(path)).fields.get("tokenizer.ggml.tokens")
    if field is None:
        raise TokenizerError(f"{path}: the GGUF has no tokenizer.ggml.tokens; it cannot be matched to a tokenizer.json.")
    return [bytes(field.parts[i]).decode("utf-8", errors="replace") for i in field.data]


# Files saved beside a tokenizer.json that a conversion reads too (gguf's SpecialVocab takes the
# chat template and special token ids from them).
TOKENIZER_COMPANIONS = ("tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja")


def dequantize_gguf(gguf_file: str | Path, tokenizer_json: str | Path, out_dir: str | Path) -> Path:
    """Write ``out_dir`` (config.json, F32 weights, tokenizer.json and its companions) from ``gguf_file``; a folder
    already made from the same file (same sha256) is reused. Returns ``out_dir``."""
    gguf_file, tokenizer_json, out = Path(gguf_file), Path(tokenizer_json), Path(out_dir)
    digest = sha256_of(gguf_file)
    stamp = out / STAMP
    if stamp.is_file() and json.loads(stamp.read_text()).get("sha256") == digest:
        return out
    vocab = Tokenizer.from_file(str(tokenizer_json)).get_vocab()
    by_id = sorted(vocab, key=vocab.__getitem__)
    tokens = _gguf_tokens(gguf_file)
    # the GGUF pads the vocabulary up to the model's embedding rows with "[PAD<id>]" entries
    if tokens[: len(by_id)] != by_id or any(not t.startswith("[PAD") for t in tokens[len(by_id):]):
        raise TokenizerError(
            f"{gguf_file}: its vocabulary differs from {tokenizer_json}; give the tokenizer.json the generator was built with."
        )
    try:
        model = AutoModelForCausalLM.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name, dtype=torch.float32)
    except (ValueError, KeyError, OSError) as exc:
        raise UnsupportedModelError(f"{gguf_file}: transformers cannot dequantize this GGUF ({exc}).") from exc
    shutil.rmtree(out, ignore_errors=True)
    model.save_pretrained(out)
    shutil.copy(tokenizer_json, out / "tokenizer.json")
    for name in TOKENIZER_COMPANIONS:  # the chat template and special tokens, when they are beside it
        if (tokenizer_json.parent / name).is_file():
            shutil.copy(tokenizer_json.parent / name, out / name)
    # the stamp goes last: a folder left without it by an interruption is rebuilt, never reused
    atomic_write_text(stamp, json.dumps({"file": gguf_file.name, "sha256": digest}) + "\n")
    return out
