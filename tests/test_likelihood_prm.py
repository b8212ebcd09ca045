"""The generator-aware PRM: the generator's likelihood joins the quantile logits, inside the ONNX
graph, and ranks a right step above a wrong one where the text-only head cannot."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from transformers import AutoModelForCausalLM

from edge_adapt.cli import main
from edge_adapt.errors import UnsupportedModelError
from edge_adapt.prm import PRMFormat, QuantilePRM
from edge_adapt.tasks.arithmetic import solve
from edge_adapt_tools.prm.calibration_data import CalibrationRecord, CalibrationWriter, read_records
from edge_adapt_tools.prm.data import split_questions
from edge_adapt_tools.prm.likelihood_prm import GeneratorAwarePRM

from model_factory import TINY_ARITHMETIC

FMT = PRMFormat(question_template="Q:{question}\n", step_separator="\n\n", max_length=96)


def corrupted_calibration(path: Path, n_questions: int = 120, seed: int = 0) -> Path:
    """Per question a right solution (success 1 all along) and one as long whose first result is
    off by a few and which goes on correctly from there (success 0 from the wrong step on): the
    texts differ in a digit the generator would not write."""
    rng = random.Random(seed)
    writer = CalibrationWriter(path, {"file": "tiny-steps", "sha256": "-"})
    # one and two operations: the arithmetic a generator trained for seconds has mostly learnt
    for i, problem in enumerate(TINY_ARITHMETIC.problems("train", (n_questions // 2, n_questions - n_questions // 2, 0))):
        chain = solve(problem.question)
        value = chain[0][3] + rng.choice([-7, -5, 5, 7])
        wrong = [f"{chain[0][0]}{chain[0][1]}{chain[0][2]}={value}"]
        for _, op, b, _ in chain[1:]:
            new = value + b if op == "+" else value - b if op == "-" else value * b
            wrong.append(f"{value}{op}{b}={new}")
            value = new
        right = TINY_ARITHMETIC.solution(problem).split("\n\n")
        recs = [CalibrationRecord(f"q{i}", problem.question, problem.answer, (), 8, 4, generator=writer.generator)]
        for steps, ok in ((right, True), ([*wrong, f"A:{value}"], False)):
            prefix = tuple(s + "\n\n" for s in steps[:-1]) + (steps[-1],)
            for depth in range(1, len(prefix) + 1):
                recs.append(CalibrationRecord(f"q{i}", problem.question, problem.answer, prefix[:depth], 8, 8 * ok,
                                              depth == len(prefix), generator=writer.generator))
        writer.write_question(recs)
    return path


@pytest.fixture(scope="module")
def aware_prm(step_checkpoint, tmp_path_factory):
    from edge_adapt_tools.prm.pipeline import PRMBuildSettings, build_quantile_prm
    from edge_adapt_tools.prm.train import TrainSettings

    work = tmp_path_factory.mktemp("aware")
    calib = corrupted_calibration(work / "calib.jsonl")
    settings = PRMBuildSettings(fmt=FMT, holdout=0.25, train=TrainSettings(epochs=1, batch_size=16, lr=1e-4, head_lr=5e-3),
                                likelihood_generator=str(step_checkpoint), fp16=False)
    return build_quantile_prm(step_checkpoint, calib, work / "prm", settings), calib


def _held_out_pairs(calib: Path) -> list[tuple[str, list[str], list[str]]]:
    records = read_records(calib)
    _, held = split_questions(records, 0.25)
    pairs = []
    for qid in sorted(held):
        finals = [r for r in records if r.question_id == qid and r.complete]
        right = next(r for r in finals if r.n_correct)
        wrong = next(r for r in finals if not r.n_correct)
        pairs.append((right.question, list(right.prefix), list(wrong.prefix)))
    return pairs


def test_likelihood_term_ranks_the_right_solution_first_through_the_device_runtime(aware_prm) -> None:
    build, calib = aware_prm
    fit = build.likelihood
    assert fit is not None
    assert fit.train_loss_after < fit.train_loss_before
    assert fit.weight[1] > 0  # learnt from the data: a likelier solution is a likelier success
    assert min(fit.question + fit.step + fit.weight) >= 0  # the scales are kept non-negative (unconstrained: -9.5 here)
    # held out, the combination lowers the loss it is fitted with. Not the Brier of the median here:
    # this fixture's solution targets are 0 or 1, whose median is 0 or 1, so a better quantile fit
    # can score a worse median Brier (it does, 0.32 against 0.24: a weak generator's likelihood of a
    # hand-made wrong digit overlaps a right one's across questions). On the default models, whose
    # targets are Monte-Carlo rates, the term lowers both (models/MODEL_CARD.md).
    assert build.after.pinball < build.after_prm_only.pinball
    # the combination is fitted on questions the head never trained on (nor held out), at the
    # positions inside their solutions: one record per question is the question's own
    counts = build.counts
    assert counts["likelihood_fit_questions"] > 0
    assert fit.points == counts["likelihood_fit_records"] - counts["likelihood_fit_questions"]
    questions = len({r.question_id for r in read_records(calib)})
    assert counts["train_questions"] + counts["likelihood_fit_questions"] + counts["held_out_questions"] == questions

    prm = QuantilePRM(build.export.path, variant="fp32")
    pairs = _held_out_pairs(calib)
    wins = 0
    for question, right, wrong in pairs:
        r, w = prm.score(question, [right, wrong])
        wins += r.final.median > w.final.median
    assert wins >= 0.7 * len(pairs), f"{wins}/{len(pairs)}"
    assert prm.bundle.source["likelihood_generator"]
    assert prm.bundle.metrics["likelihood"]["weight"] == fit.weight


def test_the_question_scores_as_the_head_alone(step_checkpoint) -> None:
    """Up to the end of the question the combination's bias (fitted for solutions, whose
    likelihood is always below one) must not move the head's question score; after it, it does."""
    from tokenizers import Tokenizer

    from edge_adapt_tools.prm.quantile_prm import from_backbone

    tok = Tokenizer.from_file(str(step_checkpoint / "tokenizer.json"))
    nl = tok.encode("\n", add_special_tokens=False).ids[-1]
    model = GeneratorAwarePRM(from_backbone(step_checkpoint), AutoModelForCausalLM.from_pretrained(step_checkpoint), nl, [nl])
    with torch.no_grad():  # any fitted combination
        for p, v in ((model.question, 0.5), (model.step, 2.0), (model.weight, 1.0), (model.bias, 3.0)):
            p.fill_(v)
        ids = torch.tensor([tok.encode("Q:3+4\n3+4=7\n\nA:7\n\n").ids])
        got = model(ids, torch.ones_like(ids)).logits[0]
        head = model.prm(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[0]
    q_end = ids[0].tolist().index(nl)
    torch.testing.assert_close(got[: q_end + 1], head[: q_end + 1])
    assert not torch.allclose(got[q_end + 1 :], head[q_end + 1 :], atol=0.1)  # the solution's positions are combined


def test_exported_graph_reproduces_the_torch_module(aware_prm, step_checkpoint) -> None:
    build, _ = aware_prm
    exported = build.export
    assert exported.parity_max_abs_diff < 1e-3 * max(1.0, exported.parity_logit_scale)
    variants = {v.variant: v for v in exported.variants}
    assert variants["fp32"].accepted
    assert "int8" in variants
    # the graph holds the generator: it is bigger than the PRM alone by about one generator
    gen_bytes = sum(p.numel() * 4 for p in AutoModelForCausalLM.from_pretrained(step_checkpoint).parameters())
    assert variants["fp32"].size_bytes > 1.5 * gen_bytes


def test_loglik_counts_solution_tokens_only(step_checkpoint) -> None:
    from tokenizers import Tokenizer

    from edge_adapt_tools.prm.quantile_prm import from_backbone

    tok = Tokenizer.from_file(str(step_checkpoint / "tokenizer.json"))
    gen = AutoModelForCausalLM.from_pretrained(step_checkpoint).eval()
    nl = tok.encode("\n", add_special_tokens=False).ids[-1]
    model = GeneratorAwarePRM(from_backbone(step_checkpoint), gen, nl, [nl])
    text = "Q:3+4\n3+4=7\n\nA:7\n\n"
    ids = torch.tensor([tok.encode(text).ids])
    with torch.no_grad():
        got = model.loglik(ids, torch.ones_like(ids))[0].numpy()
        logp = torch.log_softmax(gen(input_ids=ids).logits[0], -1).numpy()
    tokens = ids[0].tolist()
    q_end = tokens.index(nl)
    expected = sum(logp[i - 1, t] for i, t in enumerate(tokens) if i > q_end and t != nl)
    assert got[q_end] == 0.0  # nothing counted up to the question's end
    assert got[-1] == pytest.approx(expected, abs=1e-4)
    assert np.all(np.diff(got) <= 1e-6)  # log-probabilities only ever add up downwards


def test_likelihood_needs_the_generators_tokenizer_and_a_question_end(step_checkpoint, checkpoint, tmp_path: Path) -> None:
    calib = corrupted_calibration(tmp_path / "calib.jsonl", n_questions=12)

    def export_prm(generator: Path, template: str) -> str:
        result = CliRunner().invoke(main, [
            "export", "prm", str(step_checkpoint), "-c", str(calib), "-o", str(tmp_path / "prm"), "--epochs", "1",
            "--no-int8", "--no-fp16", "--holdout", "0.3", "--question-template", template, "--likelihood-from", str(generator)])
        assert result.exit_code != 0
        return " ".join(result.output.split())

    other = checkpoint("llama-tied")  # another tokenizer
    assert "tokenizer differs from the PRM's" in export_prm(other, "Q:{question}\\n")
    assert "nothing after {question}" in export_prm(step_checkpoint, "{question}")
    with pytest.raises(UnsupportedModelError, match="vocabulary"):
        GeneratorAwarePRM(AutoModelForCausalLM.from_pretrained(other),
                          AutoModelForCausalLM.from_pretrained(step_checkpoint), 0, [0])
    assert not (tmp_path / "prm").exists()  # nothing half-written


def test_the_combination_starts_as_the_prm_and_splits_question_from_step(step_checkpoint) -> None:
    """question = step = 1, weight = bias = 0 is the head alone; with step = 0 every position after
    the question carries the question's logit (the question-level score, exactly)."""
    from edge_adapt_tools.prm.quantile_prm import from_backbone

    head = from_backbone(step_checkpoint, (0.1, 0.5, 0.9), base_rate=0.5).eval()
    with torch.no_grad():
        head.score.weight.normal_(0, 0.05, generator=torch.Generator().manual_seed(0))
    generator = AutoModelForCausalLM.from_pretrained(step_checkpoint)
    newline = _newline_id(step_checkpoint)
    model = GeneratorAwarePRM(head, generator, question_end_id=newline, skip_ids=[])
    ids = torch.tensor([_encode(step_checkpoint, "Q:12+5\n12+5=17\n\nA:17")])
    mask = torch.ones_like(ids)
    with torch.no_grad():
        alone = head(input_ids=ids, attention_mask=mask).logits[0]
        assert torch.allclose(model(input_ids=ids, attention_mask=mask).logits[0], alone, atol=1e-5)
        model.step.zero_()
        combined = model(input_ids=ids, attention_mask=mask).logits[0]
    end = ids[0].tolist().index(newline)
    assert torch.allclose(combined[end:], alone[end].expand_as(combined[end:]), atol=1e-5)
    assert not torch.allclose(alone[end:], alone[end].expand_as(alone[end:]))  # the head itself varies


def _encode(checkpoint: Path, text: str) -> list[int]:
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(checkpoint / "tokenizer.json")).encode(text, add_special_tokens=True).ids


def _newline_id(checkpoint: Path) -> int:
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(checkpoint / "tokenizer.json")).encode("\n", add_special_tokens=False).ids[-1]


def test_a_dequantized_gguf_is_the_generator_that_runs(step_checkpoint, step_gguf, tmp_path) -> None:
    """The likelihood term reads the quantized generator: its dequantized weights reproduce
    llama.cpp's logits more closely than the F32 model it was quantized from (what is left is
    llama.cpp quantizing the activations in its Q8_0 dot products)."""
    from transformers import AutoTokenizer

    from edge_adapt.errors import TokenizerError
    from edge_adapt_tools.gguf.dequantize import dequantize_gguf
    from edge_adapt_tools.gguf.verify import check_logits, reference_outputs

    folder = dequantize_gguf(step_gguf, step_checkpoint / "tokenizer.json", tmp_path / "deq")
    stamp = (folder / "dequantized_from.json").read_text()
    assert dequantize_gguf(step_gguf, step_checkpoint / "tokenizer.json", tmp_path / "deq") == folder  # reused
    assert (folder / "dequantized_from.json").read_text() == stamp
    tokenizer = AutoTokenizer.from_pretrained(step_checkpoint)
    to_dequantized = check_logits(step_gguf, reference_outputs(folder, tokenizer), tolerance=None)
    to_parent = check_logits(step_gguf, reference_outputs(step_checkpoint, tokenizer), tolerance=None)
    assert to_dequantized.max_abs_diff < to_parent.max_abs_diff, (to_dequantized, to_parent)
    assert to_dequantized.top1_agreement == 1.0
    # another tokenizer is refused before anything is written
    other = tmp_path / "other.json"
    other.write_text((step_checkpoint / "tokenizer.json").read_text().replace('"0"', '"zero"', 1))
    with pytest.raises(TokenizerError, match="vocabulary differs"):
        dequantize_gguf(step_gguf, other, tmp_path / "refused")
    assert not (tmp_path / "refused").exists()


def test_likelihood_from_a_gguf_dequantizes_it_for_the_build_only(step_checkpoint, step_gguf, tmp_path: Path) -> None:
    """A user with only the generator's GGUF still gets the likelihood term; the temporary
    dequantized folder is gone afterwards (the ONNX graph holds the weights)."""
    import tempfile

    calib = corrupted_calibration(tmp_path / "calib.jsonl", n_questions=24)
    temp_before = set(Path(tempfile.gettempdir()).glob("edge-adapt-generator-*"))

    def export_prm(generator: Path, out: str):
        return CliRunner().invoke(main, [
            "export", "prm", str(step_checkpoint), "-c", str(calib), "-o", str(tmp_path / out), "--epochs", "1",
            "--no-int8", "--no-fp16", "--holdout", "0.3", "--question-template", "Q:{question}\\n", "--max-length", "96",
            "--likelihood-from", str(generator)])

    result = export_prm(step_gguf, "prm")
    assert result.exit_code == 0, result.output
    prm = QuantilePRM(tmp_path / "prm", variant="fp32")
    assert prm.bundle.source["likelihood_generator"] == str(step_gguf)
    assert set(prm.bundle.metrics["likelihood"]) >= {"question", "step", "weight", "bias"}
    question, right, wrong = _held_out_pairs(calib)[0]
    assert len(prm.score(question, [right, wrong])) == 2
    assert set(Path(tempfile.gettempdir()).glob("edge-adapt-generator-*")) == temp_before

    not_a_model = tmp_path / "generator.bin"
    not_a_model.write_bytes(b"\0")
    refused = export_prm(not_a_model, "refused")
    assert refused.exit_code != 0
    assert "folder or its .gguf file" in " ".join(refused.output.split())
    assert not (tmp_path / "refused").exists()


def test_a_dequantized_folder_keeps_the_chat_template_through_export_gguf(step_checkpoint, step_gguf, tmp_path: Path) -> None:
    """A user rebuilding a Hugging Face folder from a chat model's GGUF keeps its template: the
    tokenizer's companion files travel with tokenizer.json, and `export gguf` writes the template."""
    import gguf

    from edge_adapt_tools.gguf.dequantize import dequantize_gguf
    from edge_adapt_tools.gguf.export import export_gguf

    template = "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}<|assistant|>"
    tokenizer_dir = tmp_path / "tokenizer"
    tokenizer_dir.mkdir()
    (tokenizer_dir / "tokenizer.json").write_text((step_checkpoint / "tokenizer.json").read_text())
    (tokenizer_dir / "tokenizer_config.json").write_text(json.dumps({"chat_template": template}))
    folder = dequantize_gguf(step_gguf, tokenizer_dir / "tokenizer.json", tmp_path / "deq")
    assert json.loads((folder / "tokenizer_config.json").read_text())["chat_template"] == template
    converted = export_gguf(folder, tmp_path / "gguf", name="again", verify=False).conversion.path
    field = gguf.GGUFReader(converted).fields["tokenizer.chat_template"]
    assert bytes(field.parts[field.data[0]]).decode() == template
