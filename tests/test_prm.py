"""The quantile PRM: head initialisation, pinball training, ONNX export, and the device scorer."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from transformers import AutoModelForTokenClassification

from edge_adapt.cli import main
from edge_adapt.errors import EdgeAdaptError, ModelLoadError
from edge_adapt.prm import PRMFormat, QuantilePRM
from edge_adapt.prm.format import encode_prefix
from edge_adapt.prm.scorer import sigmoid
from edge_adapt_tools.prm.calibration_data import read_records
from edge_adapt_tools.prm.data import build_sequences, split_questions
from edge_adapt_tools.prm.export import INT8_TOLERANCE, _within_int8_tolerance
from edge_adapt_tools.prm.metrics import CalibrationMetrics, calibration_metrics
from edge_adapt_tools.prm.quantile_prm import from_two_label_prm

from conftest import FMT


def two_label_prm(checkpoint_dir: Path, out: Path) -> Path:
    model = AutoModelForTokenClassification.from_pretrained(checkpoint_dir, num_labels=2)
    with torch.no_grad():
        model.score.weight.normal_(0, 0.05)
        model.score.bias.copy_(torch.tensor([0.3, -0.2]))
    model.save_pretrained(out)
    shutil.copy(checkpoint_dir / "tokenizer.json", out / "tokenizer.json")
    return out


@pytest.mark.parametrize("variant", ["llama-tied", "qwen2-untied"])
def test_quantile_head_starts_as_the_two_label_prm(variant: str, checkpoint, tmp_path: Path) -> None:
    base = two_label_prm(checkpoint(variant), tmp_path / "prm2")
    old = AutoModelForTokenClassification.from_pretrained(base).eval()
    new = from_two_label_prm(base).eval()
    ids = torch.randint(0, 300, (2, 12))
    with torch.no_grad():
        p_right = torch.softmax(old(input_ids=ids).logits, -1)[..., 1]
        quantiles = torch.sigmoid(new(input_ids=ids).logits)
    assert quantiles.shape == (2, 12, 3)
    for k in range(3):
        torch.testing.assert_close(quantiles[..., k], p_right, atol=1e-6, rtol=0)
    assert new.config.quantile_levels == [0.1, 0.5, 0.9]
    assert new.config.id2label[0] == "q10"


def test_pinball_training_improves_held_out_calibration(llama_prm) -> None:
    history = [h["eval_pinball"] for h in llama_prm.training.history]
    assert min(history[1:]) < history[0]
    assert llama_prm.after.pinball < 0.8 * llama_prm.before.pinball
    # the head starts with all quantiles equal (at the base rate); training spreads them apart
    before, after = llama_prm.before.below, llama_prm.after.coverage
    assert max(before.values()) - min(before.values()) < 1e-9
    assert after["q10"] < after["q50"] < after["q90"]
    assert after["q90"] - after["q10"] > 0.4
    assert llama_prm.training.best_step > 0
    png = llama_prm.reliability_png
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_onnx_export_reproduces_pytorch_and_ships_checked_variants(llama_prm) -> None:
    exported = llama_prm.export
    assert exported.parity_max_abs_diff < 1e-3 * max(1.0, exported.parity_logit_scale)
    variants = {v.variant: v for v in exported.variants}
    assert variants["fp32"].accepted
    assert variants["fp32"].metrics is not None
    assert set(variants) == {"fp32", "int8", "fp16"}
    config = json.loads((exported.path / "prm_config.json").read_text())
    assert config["quantile_levels"] == [0.1, 0.5, 0.9]
    assert config["format"]["question_template"] == "Q:{question}\n"
    assert set(config["models"]) == {v for v, c in variants.items() if c.accepted}
    assert (config["cpu_variant"] == "int8") == variants["int8"].accepted
    for v in variants.values():
        assert (exported.path / v.file).exists() == v.accepted
    assert config["generator"]["file"] == "synthetic"


def test_scorer_matches_pytorch_on_held_out_prefixes(llama_prm, checkpoint, synthetic_calib) -> None:
    prm = QuantilePRM(llama_prm.export.path, variant="fp32")
    assert prm.provider == "CPUExecutionProvider"
    records = read_records(synthetic_calib)
    _, held = split_questions(records, 0.25)
    held_records = [r for r in records if r.question_id in held]
    scores = []
    for qid in sorted(held):
        recs = [r for r in held_records if r.question_id == qid]
        scores += [s.final.values for s in prm.score(recs[0].question, [list(r.prefix) for r in recs])]
    m = calibration_metrics(np.array(scores),
                            np.array([r.success_rate for r in sorted(held_records, key=lambda r: r.question_id)]),
                            prm.levels, np.array([r.n_rollouts for r in sorted(held_records, key=lambda r: r.question_id)]))
    # the metrics the export measured through the runtime are these
    fp32 = next(v for v in llama_prm.export.variants if v.variant == "fp32").metrics
    assert m.brier_median == pytest.approx(fp32.brier_median, abs=1e-9)


def test_scores_are_ordered_batch_invariant_and_per_step(llama_prm) -> None:
    prm = QuantilePRM(llama_prm.export.path, variant="fp32", max_batch=3)
    prefixes = [[], ["3+4=7\n\n"], ["3+4=9\n\n"], ["3+4=7\n\n", "A:7"], ["3+4=9\n\n", "A:9"]]
    together = prm.score("3+4", prefixes, per_step=True)
    for p, s in zip(prefixes, together, strict=True):
        assert list(s.final.values) == sorted(s.final.values)
        assert 0 < s.final.low <= s.final.high < 1
        assert len(s.per_step) == len(p) + 1
        assert s.per_step[-1] == s.final
        assert s.dropped_steps == 0
    alone = [prm.score("3+4", [p])[0] for p in prefixes]
    for a, b in zip(together, alone, strict=True):
        np.testing.assert_allclose(a.final.values, b.final.values, atol=1e-5)
    # the question-level score of every prefix is the same number: the model is causal
    np.testing.assert_allclose([s.per_step[0].median for s in together], together[0].final.median, atol=1e-5)
    assert prm.score_question("3+4").median == pytest.approx(together[0].final.median, abs=1e-5)
    assert prm.stats.calls == 1 + len(prefixes) + 1
    assert prm.stats.prefixes == 2 * len(prefixes) + 1
    assert prm.stats.runs >= 2 + len(prefixes)
    assert prm.stats.tokens > 0
    assert prm.stats.wall_s > 0


def test_long_prefixes_are_cut_by_the_documented_rule(llama_prm) -> None:
    prm = QuantilePRM(llama_prm.export.path, variant="fp32")
    steps = [f"{i}+{i}={2 * i} and some more words to make this step long\n\n" for i in range(1, 9)]
    full = prm.score("3+4", [steps], per_step=True)[0]
    assert full.n_tokens <= FMT.max_length
    assert full.dropped_steps > 0
    assert full.per_step[1] is None
    assert full.per_step[-1] is not None
    assert full.per_step[0].median == pytest.approx(prm.score_question("3+4").median, abs=1e-5)
    huge = prm.score("3+4 " * 200, [["x" * 5000]])[0]  # question and step both beyond the context
    assert huge.n_tokens <= FMT.max_length
    assert 0 < huge.final.median < 1


def test_prm_bad_inputs(llama_prm, tmp_path: Path) -> None:
    prm = QuantilePRM(llama_prm.export.path, variant="fp32")
    with pytest.raises(EdgeAdaptError, match="question is empty"):
        prm.score("  ", [[]])
    with pytest.raises(EdgeAdaptError, match="steps must be strings"):
        prm.score("3+4", [[7]])
    with pytest.raises(EdgeAdaptError, match="step encodes to no tokens|non-empty"):
        encode_prefix(prm.tokenizer, PRMFormat(step_separator=""), "3+4", [""])
    with pytest.raises(ModelLoadError, match="not a PRM folder"):
        QuantilePRM(tmp_path / "missing")
    broken = tmp_path / "broken"
    shutil.copytree(llama_prm.export.path, broken)
    (broken / "model.onnx").unlink()
    with pytest.raises(ModelLoadError, match="missing: model.onnx"):
        QuantilePRM(broken)
    (broken / "prm_config.json").write_text("{")
    with pytest.raises(ModelLoadError, match="malformed PRM config"):
        QuantilePRM(broken)
    with pytest.raises(ModelLoadError, match="onnxruntime-gpu"):
        QuantilePRM(llama_prm.export.path, providers=["CUDAExecutionProvider"])
    with pytest.raises(ModelLoadError, match="no 'int4' model"):
        QuantilePRM(llama_prm.export.path, variant="int4")


def test_qwen2_backbone_with_lora_through_the_cli(checkpoint, synthetic_calib, tmp_path: Path) -> None:
    result = CliRunner().invoke(main, [
        "export", "prm", str(checkpoint("qwen2-tied")), "-c", str(synthetic_calib), "-o", str(tmp_path / "qprm"),
        "--question-template", "Q:{question}\\n", "--max-length", "64", "--epochs", "2", "--lora-rank", "4",
        "--head-lr", "1e-2", "--no-fp16",
    ])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "Calibration on held-out questions" in text
    assert "ONNX vs PyTorch: max abs logit diff" in text
    config = json.loads((tmp_path / "qprm" / "prm_config.json").read_text())
    held = config["metrics"]["held_out"]
    assert held["after"]["pinball"] < held["before"]["pinball"]  # head + adapters learned, then merged
    prm = QuantilePRM(tmp_path / "qprm")
    assert prm.format.question_template == "Q:{question}\n"
    assert 0 < prm.score_question("3+4").median < 1


def test_packing_uses_every_record_once(checkpoint, synthetic_calib) -> None:
    from tokenizers import Tokenizer

    records = read_records(synthetic_calib)
    tok = Tokenizer.from_file(str(checkpoint("llama-tied") / "tokenizer.json"))
    seqs = build_sequences(records, tok, FMT)
    assert sum(len(s.targets) for s in seqs) == len(records)
    assert len(seqs) < len(records)  # several labels share one forward pass
    train, held = split_questions(records, 0.25)
    assert train
    assert held
    assert not train & held


def test_calibration_metrics_by_hand() -> None:
    preds = np.array([[0.1, 0.2, 0.3], [0.5, 0.6, 0.7], [0.02, 0.05, 0.08]])
    targets = np.array([0.25, 0.5, 0.0])
    m = calibration_metrics(preds, targets, (0.1, 0.5, 0.9), n_rollouts=np.array([8, 8, 8]))
    assert m.brier_median == pytest.approx(((0.2 - 0.25) ** 2 + (0.6 - 0.5) ** 2 + 0.05**2) / 3)
    # strictly below: row 1 only under q90; row 2 (on q10 exactly) under q50 and q90; row 3 under all
    assert m.below == {"q10": pytest.approx(1 / 3), "q50": pytest.approx(2 / 3), "q90": pytest.approx(1.0)}
    # ties within half an MC step (1/16 = 0.0625) count tau: row 1 ties q50 and q90 (0.05 away);
    # row 2 ties q10 (0 away) and is 0.1 below q50/q90; row 3 (target 0) ties q10 (0.02) and
    # q50 (0.05) but is strictly below q90 (0.08 away)
    assert m.coverage["q10"] == pytest.approx((0 + 0.1 + 0.1) / 3)
    assert m.coverage["q50"] == pytest.approx((0.5 + 1 + 0.5) / 3)
    assert m.coverage["q90"] == pytest.approx((0.9 + 1 + 1) / 3)
    # ECE: bins 0.2, 0.6 and 0.05 hold one point each
    assert m.ece_median == pytest.approx((0.05 + 0.1 + 0.05) / 3)
    assert len(m.warnings) == 1
    assert "only 3 held-out targets" in m.warnings[0]


def test_a_degenerate_hold_out_is_reported_as_such_not_as_perfect() -> None:
    # three held-out questions the generator never solves: a PRM saying ~0 looks perfect on them
    preds = np.tile([0.0001, 0.0002, 0.0003], (60, 1))
    m = calibration_metrics(preds, np.zeros(60), (0.1, 0.5, 0.9), n_rollouts=np.full(60, 8))
    assert m.brier_median < 1e-6
    assert m.coverage == {"q10": pytest.approx(0.1), "q50": pytest.approx(0.5), "q90": pytest.approx(0.9)}
    assert m.warnings
    assert "every held-out target is 0" in m.warnings[0]
    assert "never succeeds" in m.warnings[0]
    mixed = calibration_metrics(np.tile([0.2, 0.5, 0.8], (60, 1)), np.tile([0.0, 1.0], 30), (0.1, 0.5, 0.9))
    assert mixed.warnings == ()


def test_sigmoid_of_extreme_logits_is_quiet_and_exact() -> None:
    # the shipped PRM's logits reach -100 on hopeless prefixes; 1/(1+exp(100)) overflowed float32
    logits = np.array([-300, -100, -20, 0, 3, 20, 300], dtype=np.float32)
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # underflow to 0 is fine (numpy ignores it)
        probs = sigmoid(logits)
    assert probs.dtype == np.float32
    np.testing.assert_allclose(probs, 1 / (1 + np.exp(-logits.astype(np.float64))), rtol=1e-5, atol=1e-45)


def test_int8_acceptance_rule() -> None:
    base = CalibrationMetrics(100, 0.040, 0.030, {"q10": 0.10, "q50": 0.50, "q90": 0.90}, {}, 0.05)
    close = CalibrationMetrics(100, 0.042, 0.035, {"q10": 0.11, "q50": 0.51, "q90": 0.89}, {}, 0.05)
    far = CalibrationMetrics(100, 0.040 + 2 * INT8_TOLERANCE["brier_median"], 0.030,
                             {"q10": 0.10, "q50": 0.50, "q90": 0.90}, {}, 0.05)
    assert _within_int8_tolerance(base, close)[0]
    ok, why = _within_int8_tolerance(base, far)
    assert not ok
    assert "brier_median" in why


def test_logistic_term_keeps_saturated_outputs_learning_and_ordered() -> None:
    from edge_adapt_tools.prm.train import asymmetric_logistic_loss, pinball_loss

    levels = torch.tensor([0.1, 0.5, 0.9])
    targets = torch.tensor([1.0, 1.0, 0.75])
    saturated = torch.full((3, 3), -11.0, requires_grad=True)  # every output ~ 1.7e-5: the collapse seen in training
    pinball_loss(torch.sigmoid(saturated), targets, levels).backward()
    assert saturated.grad.abs().max() < 1e-4  # the pinball loss alone barely moves it
    saturated.grad = None
    asymmetric_logistic_loss(saturated, targets, levels).backward()
    assert (saturated.grad < -0.005).all()  # the logistic term pushes every output up (mean over 9 outputs)
    # fitted to a spread of targets, the three outputs come out ordered by level
    z = torch.zeros(1, 3, requires_grad=True)
    draws = torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0, 1.0, 1.0, 0.0])
    opt = torch.optim.SGD([z], lr=2.0)
    for _ in range(300):
        opt.zero_grad()
        asymmetric_logistic_loss(z.expand(len(draws), 3), draws, levels).backward()
        opt.step()
    p = torch.sigmoid(z)[0]
    assert p[0] < p[1] < p[2]


def test_the_prm_context_follows_the_data(checkpoint, synthetic_calib) -> None:
    from tokenizers import Tokenizer

    from edge_adapt_tools.prm.calibration_data import read_records
    from edge_adapt_tools.prm.data import length_from_data

    records = read_records(synthetic_calib)
    tokenizer = Tokenizer.from_file(str(checkpoint("llama-tied") / "tokenizer.json"))
    fmt = PRMFormat()
    length = length_from_data(records, tokenizer, fmt)
    whole = sorted(len(encode_prefix(tokenizer, PRMFormat(max_length=4096), r.question, list(r.prefix)).input_ids)
                   for r in records if r.origin == "sample")
    assert length % 64 == 0
    assert 64 <= length <= 1024
    assert sum(n <= length for n in whole) >= 0.99 * len(whole)
    assert length - 64 < whole[-1]
