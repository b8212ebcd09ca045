"""Hugging Face -> GGUF -> quantized GGUF, end to end through the real llama.cpp."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import gguf
import pytest
import torch
from click.testing import CliRunner

from edge_adapt.cli import main
from edge_adapt.errors import ModelLoadError, QuantizationError, TokenizerError, UnsupportedModelError, VerificationError
from edge_adapt.generator.llama_backend import LlamaModel
from edge_adapt_tools.gguf import checkpoint as hf_checkpoint
from edge_adapt_tools.gguf.export import export_gguf
from edge_adapt_tools.gguf.quantize import quantize_gguf

from conftest import VARIANTS
from model_factory import random_checkpoint


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_f32_export_reproduces_pytorch(variant: str, checkpoint, tmp_path: Path) -> None:
    result = export_gguf(checkpoint(variant), tmp_path, name="m")
    assert result.tokenizer.passed, result.tokenizer.mismatches
    assert result.tokenizer.n_probes >= 10
    lg = result.logits
    assert lg.max_abs_diff < VARIANTS[variant].get("logit_bound", 1e-4) * max(1.0, lg.logit_scale), lg
    assert lg.greedy_match
    assert lg.top1_agreement == 1.0
    assert lg.logit_scale > 0.5  # the model is not degenerate: logits differ between tokens
    conv = result.conversion
    assert conv.path == tmp_path / "m-F32.gguf"
    assert conv.path.exists()
    assert conv.tied_embeddings == VARIANTS[variant]["tied"]
    names = {t.name for t in gguf.GGUFReader(conv.path).tensors}
    assert ("output.weight" in names) != VARIANTS[variant]["tied"]
    assert ("rope_freqs.weight" in names) == (VARIANTS[variant].get("rope_scaling") is not None)
    assert not list(tmp_path.glob(".*partial"))


def test_chat_template_and_special_tokens_are_written(checkpoint, tmp_path: Path) -> None:
    path = export_gguf(checkpoint("qwen2-tied"), tmp_path, verify=False).conversion.path
    model = LlamaModel(path, vocab_only=True)
    try:
        assert "<|im_start|>" in (model.chat_template() or "")
        assert model.metadata("tokenizer.ggml.pre") == "qwen2"
        assert model.metadata("general.architecture") == "qwen2"
        assert model.metadata("qwen2.attention.head_count_kv") == "2"
    finally:
        model.close()


@pytest.mark.parametrize("outtype", ["f16", "bf16"])
def test_16_bit_exports_stay_within_tolerance(outtype: str, checkpoint, tmp_path: Path) -> None:
    result = export_gguf(checkpoint("llama-tied"), tmp_path, outtype=outtype)
    assert result.logits.within_tolerance
    assert result.logits.passed
    types = {t.tensor_type.name for t in gguf.GGUFReader(result.conversion.path).tensors}
    assert types == {"F32", outtype.upper()}  # norms stay F32, matrices take the requested type


def test_quantization_types_are_real_and_shrink_the_file(checkpoint, tmp_path: Path) -> None:
    result = export_gguf(checkpoint("qwen2-untied"), tmp_path, quant_types=["Q8_0", "Q5_K_M", "Q4_K_M", "Q4_0"])
    by_type = {q.report.quant_type: q for q in result.quantized}
    assert set(by_type) == {"Q8_0", "Q5_K_M", "Q4_K_M", "Q4_0"}
    expected_main = {"Q8_0": "Q8_0", "Q5_K_M": "Q5_K", "Q4_K_M": "Q4_K", "Q4_0": "Q4_0"}
    for name, qf in by_type.items():
        report = qf.report
        assert report.fallbacks == [], name  # 256-multiple sizes: nothing falls back
        assert report.tensor_types.get(expected_main[name], 0) >= 8, report.tensor_types
        assert report.size_bytes < 0.35 * result.conversion.size_bytes
        assert qf.parity is not None
        assert qf.parity.max_abs_diff < 0.5 * qf.parity.logit_scale
    assert by_type["Q8_0"].parity.max_abs_diff < by_type["Q4_0"].parity.max_abs_diff
    assert by_type["Q4_K_M"].report.size_bytes < by_type["Q8_0"].report.size_bytes


def test_fallbacks_are_reported_per_tensor(tmp_path: Path) -> None:
    ckpt = random_checkpoint(tmp_path / "odd", intermediate=320)  # ffn_down rows of 320: no K-quant fits
    base = export_gguf(ckpt, tmp_path / "out", verify=False).conversion.path
    report = quantize_gguf(base, tmp_path / "q4km.gguf", "q4_k_m")
    fallback_names = {fb.name for fb in report.fallbacks}
    assert fallback_names == {"blk.0.ffn_down.weight", "blk.1.ffn_down.weight"}
    for fb in report.fallbacks:
        assert fb.row_size == 320
        assert fb.block_size == 256
        assert fb.wanted in ("Q4_K", "Q6_K")
        assert fb.stored_as not in ("Q4_K", "Q6_K")
    # Q8_0 blocks of 32 divide 320: no fallback there
    assert quantize_gguf(base, tmp_path / "q8.gguf", "Q8_0").fallbacks == []
    # the command says it once per kind of fallback, not once per tensor (nor twice)
    result = CliRunner().invoke(main, ["export", "quantize", str(base), str(tmp_path / "again.gguf"), "-t", "Q4_K_M"])
    lines = [line for line in result.output.splitlines() if line.startswith("fallback ")]
    said = " ".join(result.output.split())
    assert result.exit_code == 0, result.output
    assert len(lines) == len({(fb.wanted, fb.stored_as) for fb in report.fallbacks}), result.output
    assert "tensor(s) with rows of 320" in said


def test_cli_export_prints_the_checks(checkpoint, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["export", "gguf", str(checkpoint("llama-tied")), "-o", str(tmp_path), "--name", "cli", "-q", "Q4_K_M"]
    )
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())  # rich wraps lines at the terminal width
    assert "identical to Hugging Face on" in text
    assert "max abs diff" in text
    assert "greedy continuation identical" in text
    assert (tmp_path / "cli-F32.gguf").exists()
    assert (tmp_path / "cli-Q4_K_M.gguf").exists()

    result = CliRunner().invoke(main,
                                ["export", "quantize", str(tmp_path / "cli-F32.gguf"), str(tmp_path / "q8.gguf"), "-t", "q8_0"])
    assert result.exit_code == 0, result.output
    assert "no per-tensor fallbacks" in " ".join(result.output.split())


# -- bad input -------------------------------------------------------------------------------


def test_failed_verification_leaves_no_file(checkpoint, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Drop the rotary Q/K permutation: the file would load fine and compute garbage.
    spec = hf_checkpoint.ARCHITECTURES["LlamaForCausalLM"]
    monkeypatch.setitem(hf_checkpoint.ARCHITECTURES, "LlamaForCausalLM", dataclasses.replace(spec, permute_qk=False))
    with pytest.raises(VerificationError, match="logits differ"):
        export_gguf(checkpoint("llama-tied"), tmp_path, name="broken", quant_types=["Q8_0"])
    assert list(tmp_path.iterdir()) == []


def test_unsupported_architecture(checkpoint, tmp_path: Path) -> None:
    ckpt = tmp_path / "gpt2"
    shutil.copytree(checkpoint("llama-tied"), ckpt)
    config = json.loads((ckpt / "config.json").read_text())
    config["architectures"] = ["GPT2LMHeadModel"]
    (ckpt / "config.json").write_text(json.dumps(config))
    with pytest.raises(UnsupportedModelError, match="GPT2LMHeadModel.*LlamaForCausalLM"):
        export_gguf(ckpt, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_missing_tokenizer(checkpoint, tmp_path: Path) -> None:
    ckpt = tmp_path / "notok"
    shutil.copytree(checkpoint("llama-tied"), ckpt)
    (ckpt / "tokenizer.json").unlink()
    with pytest.raises(TokenizerError, match="no tokenizer.json"):
        export_gguf(ckpt, tmp_path / "out")


def test_pickle_only_weights_and_missing_folder(checkpoint, tmp_path: Path) -> None:
    ckpt = tmp_path / "pickle"
    shutil.copytree(checkpoint("llama-tied"), ckpt)
    (ckpt / "model.safetensors").unlink()
    torch.save({}, ckpt / "pytorch_model.bin")
    with pytest.raises(UnsupportedModelError, match="safetensors"):
        export_gguf(ckpt, tmp_path / "out")
    with pytest.raises(UnsupportedModelError, match="not a directory"):
        export_gguf(tmp_path / "nowhere", tmp_path / "out")


def test_unknown_quantization_type_fails_before_work(checkpoint, tmp_path: Path) -> None:
    with pytest.raises(QuantizationError, match="Q4_K_M"):
        export_gguf(checkpoint("llama-tied"), tmp_path, quant_types=["Q4_K_X"])
    assert list(tmp_path.iterdir()) == []
    result = CliRunner().invoke(main, ["export", "gguf", str(checkpoint("llama-tied")), "-o", str(tmp_path), "-q", "Q3"])
    assert result.exit_code == 1
    assert "unknown quantization type 'Q3'" in " ".join(result.output.split())


def test_corrupt_and_truncated_gguf(random_gguf: Path, tmp_path: Path) -> None:
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(random_gguf.read_bytes()[: random_gguf.stat().st_size // 2])
    with pytest.raises(ModelLoadError, match=r"truncated.gguf: .*not within the file bounds.*truncated or corrupt"):
        LlamaModel(truncated)
    with pytest.raises(QuantizationError, match="truncated.gguf"):
        quantize_gguf(truncated, tmp_path / "q.gguf", "Q8_0")
    assert not (tmp_path / "q.gguf").exists()

    garbage = tmp_path / "garbage.gguf"
    garbage.write_bytes(b"<html>404 not found</html>" * 10)
    with pytest.raises(ModelLoadError, match="not a GGUF file"):
        LlamaModel(garbage)
    with pytest.raises(ModelLoadError, match="not a GGUF file"):
        quantize_gguf(garbage, tmp_path / "q.gguf", "Q8_0")

    bad_version = tmp_path / "version.gguf"
    bad_version.write_bytes(b"GGUF" + (99).to_bytes(4, "little") + bytes(16))
    with pytest.raises(ModelLoadError, match="version 99"):
        LlamaModel(bad_version)


def test_requantizing_is_refused(random_gguf: Path, tmp_path: Path) -> None:
    q8 = quantize_gguf(random_gguf, tmp_path / "q8.gguf", "Q8_0").path
    with pytest.raises(QuantizationError, match="already quantized"):
        quantize_gguf(q8, tmp_path / "q4.gguf", "Q4_0")


def _tokenizer_json(normalizer, pre_tokenizer) -> dict:
    """A real byte-level BPE tokenizer.json, built with `tokenizers` in the shape a checkpoint ships."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers  # noqa: F401

    tok = Tokenizer(models.BPE())
    if normalizer is not None:
        tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizer
    tok.decoder = decoders.ByteLevel()
    return json.loads(tok.to_str())


def test_no_op_normalizers_convert_and_real_ones_are_refused_with_what_to_do(tmp_path: Path) -> None:
    from tokenizers import normalizers, pre_tokenizers

    from edge_adapt_tools.gguf.tokenizer import detect_pre_tokenizer

    smollm = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                      pre_tokenizers.ByteLevel(add_prefix_space=False)])
    gpt2 = pre_tokenizers.ByteLevel(add_prefix_space=False)
    # SmolLM2-135M-Instruct ships {"type": "Sequence", "normalizers": []}: nothing to normalize
    assert detect_pre_tokenizer(_tokenizer_json(normalizers.Sequence([]), smollm), tmp_path) == "smollm"
    assert detect_pre_tokenizer(_tokenizer_json(None, gpt2), tmp_path) == "gpt-2"
    for changing, name in ((normalizers.NFKC(), "NFKC"), (normalizers.Sequence([normalizers.Lowercase()]), "Lowercase")):
        with pytest.raises(TokenizerError, match=f"normalizer\\(s\\) {name} change the text"):
            detect_pre_tokenizer(_tokenizer_json(changing, gpt2), tmp_path)


def _sentencepiece_json(normalizer, pre_tokenizer, *, byte_fallback: bool = True) -> dict:
    """A SentencePiece-style BPE tokenizer.json (byte fallback, "▁" for spaces), built with `tokenizers`."""
    from tokenizers import Tokenizer, models

    tok = Tokenizer(models.BPE(vocab={"<unk>": 0, "a": 1, "\u2581": 2}, merges=[], unk_token="<unk>",
                               byte_fallback=byte_fallback))
    if normalizer is not None:
        tok.normalizer = normalizer
    if pre_tokenizer is not None:
        tok.pre_tokenizer = pre_tokenizer
    return json.loads(tok.to_str())


def test_sentencepiece_style_tokenizers_in_the_shapes_checkpoints_ship(tmp_path: Path) -> None:
    from tokenizers import normalizers, pre_tokenizers

    from edge_adapt_tools.gguf.tokenizer import TokenizerStyle, detect_style

    spaces = normalizers.Replace(" ", "\u2581")
    # Gemma 3: spaces replaced, then a split on spaces that finds none; no space prefix
    gemma = _sentencepiece_json(spaces, pre_tokenizers.Split(" ", behavior="merged_with_previous"))
    assert detect_style(gemma, tmp_path) == TokenizerStyle("llama", "default", add_space_prefix=False)
    # Llama 2 / Mistral (older tokenizers): a "▁" prepended, then spaces replaced
    llama2 = _sentencepiece_json(normalizers.Sequence([normalizers.Prepend("\u2581"), spaces]), None)
    assert detect_style(llama2, tmp_path) == TokenizerStyle("llama", "default", add_space_prefix=True)
    # newer transformers: a Metaspace pre-tokenizer that does not split
    meta = _sentencepiece_json(None, pre_tokenizers.Metaspace(prepend_scheme="first", split=False))
    assert detect_style(meta, tmp_path) == TokenizerStyle("llama", "default", add_space_prefix=True)
    never = _sentencepiece_json(None, pre_tokenizers.Metaspace(prepend_scheme="never", split=False))
    assert detect_style(never, tmp_path).add_space_prefix is False
    # a split that llama.cpp's SentencePiece tokenizer does not make, or another normalizer: refused
    for normalizer, pre in ((None, pre_tokenizers.Metaspace(split=True)),
                            (normalizers.Sequence([normalizers.NFKC(), spaces]), None)):
        with pytest.raises(TokenizerError, match="not SentencePiece's"):
            detect_style(_sentencepiece_json(normalizer, pre), tmp_path)
    # byte-level BPE still goes the byte-level way
    byte_level = _tokenizer_json(None, pre_tokenizers.ByteLevel(add_prefix_space=False))
    assert detect_style(byte_level, tmp_path) == TokenizerStyle("gpt2", "gpt-2")
    # ... also flagged byte_fallback, as transformers' GGUF loader writes SmolLM2: the flag never fires
    # under ByteLevel, so it is the same byte-level tokenizer
    flagged = json.loads(json.dumps(byte_level))
    flagged["model"]["byte_fallback"] = True
    flagged["decoder"] = {"type": "Sequence", "decoders": [{"type": "ByteFallback"}, flagged["decoder"]]}
    assert detect_style(flagged, tmp_path) == TokenizerStyle("gpt2", "gpt-2")


def test_gemma3_settings_llama_cpp_fixes_are_checked(checkpoint, tmp_path: Path) -> None:
    """llama.cpp's gemma3 graph hard-codes the sliding-window period and the local rope base:
    a checkpoint that sets them otherwise is refused, naming the field."""
    from edge_adapt_tools.gguf.checkpoint import open_checkpoint

    folder = tmp_path / "gemma"
    shutil.copytree(checkpoint("gemma3-tied"), folder)
    config = json.loads((folder / "config.json").read_text())
    for field, value, message in (("rope_local_base_freq", 20000.0, "rope_local_base_freq"),
                                  ("layer_types", ["full_attention"] * 7, "every 6th layer global"),
                                  ("query_pre_attn_scalar", 128, "query_pre_attn_scalar")):
        (folder / "config.json").write_text(json.dumps({**config, field: value}))
        with pytest.raises(UnsupportedModelError, match=message):
            open_checkpoint(folder)


def test_a_byte_level_bpe_flagged_byte_fallback_converts_and_verifies(checkpoint, tmp_path: Path) -> None:
    """transformers' GGUF loader writes SmolLM2's byte-level BPE with byte_fallback set; the export
    reads it as the byte-level tokenizer it is, and the tokenization and logits checks pass."""
    from edge_adapt_tools.gguf.export import export_gguf

    folder = tmp_path / "flagged"
    shutil.copytree(checkpoint("llama-tied"), folder)
    tokenizer = json.loads((folder / "tokenizer.json").read_text())
    tokenizer["model"]["byte_fallback"] = True
    (folder / "tokenizer.json").write_text(json.dumps(tokenizer))
    result = export_gguf(folder, tmp_path / "out", name="flagged")
    assert result.conversion.path.is_file()
