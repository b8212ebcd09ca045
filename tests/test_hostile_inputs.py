"""Bad input through the real CLI, as a hostile or careless user gives it: every case ends in one
line that names the culprit, the right exit code (2: a usage error, 1: a runtime one), no
traceback, and nothing of the user's touched."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from edge_adapt.cli import main
from edge_adapt.models import load_default_models
from edge_adapt.settings import MeterSettings, ModelSettings, PromptSettings, RunSettings

MODELS = load_default_models()
Q = "(454+762)*3"


@dataclass(frozen=True)
class Case:
    name: str
    args: Callable[[Path], list[str]]  # the command line, given a scratch folder it may fill first
    code: int
    says: str  # a regex the one-line error matches (whitespace collapsed)


def _write(path: Path, data: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return path


def _prm_with(tmp: Path, change: Callable[[dict], None]) -> Path:
    prm = tmp / "prm"
    shutil.copytree(MODELS.prm, prm)
    config = json.loads((prm / "prm_config.json").read_text())
    change(config)
    (prm / "prm_config.json").write_text(json.dumps(config))
    return prm


def _prm_with_bigger_tokenizer(tmp: Path) -> Path:
    """A PRM whose tokenizer has more ids than its ONNX model's embedding (another model's)."""
    from tokenizers import Tokenizer

    prm = tmp / "prm"
    shutil.copytree(MODELS.prm, prm)
    tokenizer = Tokenizer.from_file(str(prm / "tokenizer.json"))
    tokenizer.add_tokens([f"<extra{i}>" for i in range(62)])
    tokenizer.save(str(prm / "tokenizer.json"))
    return prm


def _prm_with_user_files(tmp: Path) -> Path:
    prm = tmp / "prm"
    shutil.copytree(MODELS.prm, prm)
    _write(prm / "notes.txt", "keep")
    _write(prm / "photo.jpg", b"\xff\xd8")
    _write(prm / "sub" / "x.txt", "keep")
    return prm


def _prm_raw(tmp: Path, config: bytes) -> Path:
    prm = tmp / "prm"
    shutil.copytree(MODELS.prm, prm)
    (prm / "prm_config.json").write_bytes(config)
    return prm


def _run_folder(tmp: Path, records: str, config: str | None = None) -> Path:
    run = tmp / "run"
    _write(run / "config.json", config if config is not None else json.dumps({"strategies": ["best_of_n:n=1"]}))
    _write(run / "records.jsonl", records)
    return run


GOOD_RECORD = json.dumps({
    "question_id": "q1", "index": 0, "level": 1, "strategy": "best_of_n:n=1", "answer": "3", "gold": "3", "correct": True,
    "candidates": 1, "candidates_correct": 1, "samples_chosen": 1, "question_quantiles": [0.2, 0.5, 0.8],
    "chosen_final_median": 0.6, "decisions": [],
    "cost": {"generated_tokens": 3, "prompt_tokens": 5, "prm_calls": 1, "prm_prefixes": 1, "prm_tokens": 8, "samples": 1,
             "wall_s": 0.1, "generation_s": 0.05, "prm_s": 0.02, "joules": 0.5, "energy_source": "estimate:cpu",
             "energy_estimated": True},
})

CASES = [
    # questions
    Case("no operation", lambda t: ["solve", "454"], 2, "asks no operation"),
    Case("a 1,200-term chain", lambda t: ["solve", "+".join(["1"] * 1201)], 2, "1200 operations; a question here has at most"),
    Case("parentheses 40 deep", lambda t: ["solve", "(" * 40 + "1+2" + ")" * 40 + "*3"], 2, "nests parentheses more than"),
    Case("two expressions in words", lambda t: ["solve", "What is 3+4 and 5*6?"], 2, "more than one|separate numbers"),
    Case("a NUL in the question", lambda t: ["solve", "--task", "gsm8k", "--no-prm", "What is 2+2?\x00 and then"], 2,
         "NUL"),
    Case("prm tokenizer bigger than its model", lambda t: ["solve", Q, "--prm", str(_prm_with_bigger_tokenizer(t))], 1,
         "tokenizer has 3\\d\\d token ids but the ONNX model cannot read id"),
    Case("huge operand", lambda t: ["solve", "1" + "0" * 5000 + "+3"], 2, "5001 digits"),
    Case("no single chain", lambda t: ["solve", "3348*6+7430*2"], 2, "cannot be asked as one chain"),
    Case("not arithmetic", lambda t: ["solve", "what is love"], 2, "not a default-task question"),
    # numbers that are not numbers
    Case("energy nan", lambda t: ["solve", Q, "--energy", "nan"], 2, "--energy.*not a finite number"),
    Case("latency inf", lambda t: ["solve", Q, "--latency", "inf"], 2, "--latency.*not a finite number"),
    Case("power nan", lambda t: ["solve", Q, "--power", "nan"], 2, "--power.*not a finite number"),
    Case("temperature inf", lambda t: ["solve", Q, "--temperature", "inf"], 2, "--temperature.*not a finite number"),
    Case("meter seconds nan", lambda t: ["energy", "meters", "--seconds", "nan"], 2, "--seconds.*not a finite number"),
    Case("meter seconds inf", lambda t: ["energy", "meters", "--seconds", "inf"], 2, "--seconds.*not a finite number"),
    # strategies
    Case("es not a number", lambda t: ["solve", Q, "-s", "best_of_n:n=4+es=abc"], 2, r"\+es takes a threshold"),
    Case("es above 1", lambda t: ["solve", Q, "-s", "best_of_n:n=4+es=2"], 2, "threshold must be a finite number in"),
    Case("es negative", lambda t: ["solve", Q, "-s", "best_of_n:n=4+es=-1"], 2, "threshold must be"),
    Case("es nan", lambda t: ["solve", Q, "-s", "best_of_n:n=4+es=nan"], 2, "threshold must be"),
    Case("beam width 0", lambda t: ["solve", Q, "-s", "beam:n=4,width=0"], 2, "width must be an integer in 1..4"),
    Case("beam score_every 0", lambda t: ["solve", Q, "-s", "beam:n=4,score_every=0"], 2, "score_every must be"),
    Case("ias_beam realloc 0", lambda t: ["solve", Q, "-s", "ias_beam:k_max=2,realloc_every=0"], 2, "realloc_every must be"),
    Case("ias_beam k_max 0", lambda t: ["solve", Q, "-s", "ias_beam:k_max=0"], 2, "k_max must be an integer in 1..127"),
    Case("best_of_n huge", lambda t: ["solve", Q, "-s", "best_of_n:n=100000"], 2, "n must be an integer in 1..127"),
    Case("confidence 1", lambda t: ["solve", Q, "-s", "ias_best_of_n:n_max=8,confidence=1"], 2, "confidence must be"),
    Case("adaptive price inf", lambda t: ["solve", Q, "-s", "adaptive:price=inf"], 2, "price must be a finite number"),
    Case("bench bad spec", lambda t: ["bench", "-o", str(t / "b"), "-s", "beam:n=4,width=0"], 2, "width must be"),
    # files that are not what they claim
    Case("data is binary", lambda t: ["bench", "-o", str(t / "b"), "--task", "gsm8k", "--data",
                                      str(_write(t / "x.jsonl", b"GGUF\x00\xff\xfe\x00"))], 1, "not UTF-8 text"),
    Case("data nested deeply", lambda t: ["bench", "-o", str(t / "b"), "--task", "gsm8k", "--data",
                                          str(_write(t / "x.jsonl", "[" * 100_000))], 1, "nested too deeply"),
    Case("data repeated ids", lambda t: ["bench", "-o", str(t / "b"), "--task", "math", "--data", str(_write(
        t / "m.jsonl", "\n".join(json.dumps({"problem": f"p{i}", "solution": r"\boxed{1}",
                                             "unique_id": "same"}) for i in range(3))))],
        1, "'same' appears twice"),
    Case("template on the default task", lambda t: ["solve", Q, "--prompt-template", "Solve {question}"], 2,
         "a prompt template is for --task gsm8k/math"),
    Case("template placeholder", lambda t: ["solve", "--task", "gsm8k", "--data", str(_write(
        t / "g.jsonl", json.dumps({"question": "1+1?",
                                   "answer": "#### 2"}))), "--index", "0", "--prompt-template", "{question} {0}"],
        2, "no other placeholder"),
    Case("bench out in /proc", lambda t: ["bench", "-o", "/proc/edge-adapt-x", "--limit", "1", "-s", "best_of_n:n=1"],
         1, "cannot create the run folder /proc/edge-adapt-x"),
    Case("cost model binary",
         lambda t: ["solve", Q, "--meter", "estimate", "--cost-model", str(_write(t / "c.json", b"\x00\xff\x13"))],
         1, "not a cost-model file"),
    Case("cost model nan", lambda t: ["solve", Q, "--meter", "estimate", "--cost-model", str(_write(t / "c.json", json.dumps(
        {"device_class": "cpu", "idle_w": float("nan"), "j_per_prompt_token": 0, "j_per_generated_token": 0,
         "j_per_prm_token": 0})))], 1, "idle_w must be a finite number"),
    Case("cost model negative", lambda t: ["solve", Q, "--meter", "estimate", "--cost-model", str(_write(t / "c.json", json.dumps(
        {"device_class": "cpu", "idle_w": 1, "j_per_prompt_token": -1, "j_per_generated_token": 0,
         "j_per_prm_token": 0})))], 1, "j_per_prompt_token must be a finite number >= 0"),
    Case("prm models a list", lambda t: ["solve", Q, "--prm", str(_prm_with(t, lambda c: c.update(models=["model.onnx"])))],
         1, "malformed PRM config"),
    Case("prm file outside", lambda t: ["solve", Q, "--prm", str(_prm_with(t, lambda c: c["models"].update(fp32="/etc/passwd")))],
         1, "plain file names inside the PRM folder"),
    Case("prm template placeholder", lambda t: ["solve", Q, "--prm", str(_prm_with(
        t, lambda c: c["format"].update(question_template="{question}{0}")))], 1, "question_template"),
    Case("prm config not text", lambda t: ["solve", Q, "--prm", str(_prm_raw(t, b"\xff\xfe\x00"))], 1, "malformed PRM config"),
    # run folders
    Case("report corrupt config", lambda t: ["report", str(_run_folder(t, GOOD_RECORD + "\n", config="{nope")), "--no-plots"],
         1, "config.json: not a readable JSON file"),
    Case("report record {}", lambda t: ["report", str(_run_folder(t, GOOD_RECORD + "\n{}\n")), "--no-plots"],
         1, r"records.jsonl ?:2: not a benchmark record \(question_id"),
    Case("report record 42", lambda t: ["report", str(_run_folder(t, GOOD_RECORD + "\n42\n")), "--no-plots"],
         1, r"records.jsonl ?:2: not a benchmark record \(a JSON object"),
    # outputs that must not be overwritten
    Case("export prm into the current folder",
         lambda t: ["export", "prm", str(MODELS.prm), "-c", str(MODELS.root / "calibration.jsonl"),
                                                          "-o", "."], 1, "not the current folder"),
    Case("export prm over user files", lambda t: ["export", "prm", str(MODELS.prm), "-c", str(MODELS.root / "calibration.jsonl"),
                                                  "-o", str(_write(t / "mine" / "notes.txt", "keep").parent)], 1, "not a PRM"),
    Case("export prm over a PRM folder holding user files", lambda t: [
        "export", "prm", str(MODELS.prm), "-c", str(MODELS.root / "calibration.jsonl"), "-o", str(_prm_with_user_files(t))],
         1, r"also holds 3 file\(s\) of yours \(notes.txt, photo.jpg, sub/\)"),
    Case("rollouts to /proc",
         lambda t: ["export", "rollouts", str(MODELS.generator), "-o", "/proc/edge-adapt-x", "--per-level", "1"],
         1, "cannot write the calibration file /proc/edge-adapt-x"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_gets_one_clear_line_and_no_traceback(case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, case.args(tmp_path))
    said = " ".join(result.output.split())
    assert "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit), f"{case.name}: {result.exception!r}"
    assert result.exit_code == case.code, said
    assert re.search(case.says, said), said
    if case.name == "export prm over user files":
        assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"


def test_a_gguf_whose_weights_are_nan_is_refused_not_answered(checkpoint, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    from edge_adapt_tools.gguf.checkpoint import open_checkpoint
    from edge_adapt_tools.gguf.convert import convert_checkpoint

    broken = tmp_path / "nan-model"
    shutil.copytree(checkpoint("llama-untied"), broken)
    for weights in broken.glob("*.safetensors"):
        tensors = load_file(weights)
        save_file({name: t.fill_(float("nan")) for name, t in tensors.items()}, weights)
    gguf = convert_checkpoint(open_checkpoint(broken), tmp_path / "nan.gguf").path
    result = CliRunner().invoke(main, ["solve", Q, "--generator", str(gguf), "--no-prm"])
    said = " ".join(result.output.split())
    assert result.exit_code == 1
    assert "logits for the prompt are not finite" in said
    assert "Traceback" not in result.output


def test_a_report_reads_a_torn_run_without_writing_to_it(tmp_path: Path) -> None:
    run = _run_folder(tmp_path, GOOD_RECORD + '\n{"question_id": "q2", "stra')
    records = run / "records.jsonl"
    before = records.read_bytes()
    records.chmod(0o444)
    result = CliRunner().invoke(main, ["report", str(run), "--no-plots"])
    assert result.exit_code == 0, result.output
    assert records.read_bytes() == before


def test_a_prompt_template_with_other_placeholders_is_refused(tmp_path: Path) -> None:
    from edge_adapt.errors import EdgeAdaptError
    from edge_adapt.tasks.gsm8k import GSM8KTask

    data = _write(tmp_path / "g.jsonl", json.dumps({"question": "1+1?", "answer": "#### 2"}))
    with pytest.raises(EdgeAdaptError, match=r"no other placeholder"):
        GSM8KTask(data, prompt_template="{question} {0}")


def test_a_checkpoint_with_only_pickle_weights_is_refused_before_loading(checkpoint, synthetic_calib, tmp_path: Path) -> None:
    import torch
    from safetensors.torch import load_file

    pickled = tmp_path / "pickled"
    shutil.copytree(checkpoint("llama-untied"), pickled)
    for weights in pickled.glob("*.safetensors"):
        torch.save(load_file(weights), pickled / "pytorch_model.bin")
        weights.unlink()
    result = CliRunner().invoke(main, ["export", "prm", str(pickled), "-c", str(synthetic_calib), "-o", str(tmp_path / "prm")])
    said = " ".join(result.output.split())
    assert result.exit_code == 1
    assert "only pickle files: pytorch_model.bin" in said
    assert "Traceback" not in result.output


def test_a_prm_calibrated_for_another_generator_is_refused_and_no_prm_mode_is_labelled(smollm2_gguf, tmp_path: Path) -> None:
    # the shipped PRM with SmolLM2: its scores describe the shipped generator, so it is refused (a
    # generator given alone runs without a PRM: the shipped one is for the shipped generator only)
    refused = CliRunner().invoke(main, ["solve", Q, "--generator", str(smollm2_gguf), "--prm", str(MODELS.prm), "-n", "2"])
    said = " ".join(refused.output.split())
    assert refused.exit_code == 1
    assert "calibrated for another generator (generator-Q8_0.gguf" in said
    assert "--no-prm" in said
    # without a PRM: a majority vote, said so in the output and the JSON
    plain = CliRunner().invoke(main, ["solve", Q, "--no-prm", "-n", "3", "--json"])
    assert plain.exit_code == 0, plain.output
    data = json.loads(plain.output)
    assert data["strategy"] == "majority:n=3"
    assert data["prm_provider"] == "none"
    assert data["question_quantiles"] is None
    assert data["cost"]["prm_calls"] == 0
    assert len(data["candidates"]) == 3
    shown = CliRunner().invoke(main, ["solve", Q, "--no-prm"])
    # the default without a PRM: the adaptive vote, by the calibration shipped beside the generator
    shown_text = " ".join(shown.output.split())
    assert shown.exit_code == 0
    assert "adaptive_vote:price=" in shown_text
    assert "no PRM: the generator's calibrated adaptive vote" in shown_text
    for needs_prm in ("adaptive:price=8", "best_of_n:n=4", "beam:n=4,width=2"):
        result = CliRunner().invoke(main, ["solve", Q, "--no-prm", "-s", needs_prm])
        assert result.exit_code == 2, result.output  # refused before any model loads
        assert f"--strategy {needs_prm} reads PRM scores" in " ".join(result.output.split()), result.output
    both = CliRunner().invoke(main, ["solve", Q, "--no-prm", "--prm", str(MODELS.prm)])
    assert both.exit_code == 2
    assert "contradict" in both.output
    # a bench without a PRM: the majority ladder, its records say there was no PRM
    run = CliRunner().invoke(main,
                             ["bench", "-o", str(tmp_path / "run"), "--no-prm", "--limit", "3", "--no-plots", "--meter",
                              "estimate"])
    assert run.exit_code == 0, run.output
    from edge_adapt.bench import NO_PRM_STRATEGIES, RunFolder

    records = RunFolder(tmp_path / "run").records()
    assert {r["strategy"] for r in records} == set(NO_PRM_STRATEGIES)
    assert len(records) == 3 * len(NO_PRM_STRATEGIES)
    assert all(r["question_quantiles"] is None and r["cost"]["prm_calls"] == 0 for r in records)
    assert RunFolder(tmp_path / "run").config()["prm"] is None


def test_gpu_layers_on_a_build_without_offload_are_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    from edge_adapt.generator import Generator, GeneratorConfig
    from edge_adapt.generator.llama_platform import gpu_offload_supported

    if gpu_offload_supported():
        pytest.skip("this llama.cpp build offloads to a GPU")
    with Generator(MODELS.generator, GeneratorConfig(n_ctx=256, n_seq_max=2, n_gpu_layers=99)):
        pass
    assert "no GPU offload" in caplog.text


def test_a_chat_model_is_prompted_through_its_chat_template(smollm2_gguf: Path) -> None:
    from edge_adapt import StackSettings, open_stack
    from edge_adapt.errors import ModelLoadError
    from edge_adapt.search import BestOfN
    from edge_adapt.tasks import ArithmeticTask

    task, vote = ArithmeticTask(), BestOfN(n=1, select="majority")
    problem = task.parse_question(Q)
    run = RunSettings(ModelSettings(smollm2_gguf), meter=MeterSettings("estimate"))
    with open_stack(StackSettings(run, task, (vote,))) as stack:
        assert stack.searcher.settings.chat  # the GGUF has a template: used by default
        rendered = stack.generator.vocab.render_prompt(task.prompt(problem), chat=True, system="Be brief.")
        assert rendered.startswith("<|im_start|>system\nBe brief.<|im_end|>")
        assert rendered.endswith("<|im_start|>assistant\n")
        plain = stack.generator.vocab.render_prompt(task.prompt(problem), chat=False)
        assert plain == task.prompt(problem)
        result = stack.searcher.run(vote, problem, seed=0)
        chat_tokens = len(stack.generator.vocab.tokenize(stack.generator.vocab.render_prompt(task.prompt(problem), chat=True),
                                                         parse_special=True))
        assert result.cost.prompt_tokens == chat_tokens
    with pytest.raises(ModelLoadError, match="no chat template"), \
            open_stack(StackSettings(RunSettings(ModelSettings(MODELS.generator, MODELS.prm), PromptSettings(chat=True),
                                                 meter=MeterSettings("estimate")), task, (vote,))):
        pass


def test_the_step_delimiter_and_token_cap_can_be_set_for_a_model_that_writes_otherwise() -> None:
    def steps(*extra: str) -> list[str]:
        result = CliRunner().invoke(main, ["solve", Q, "-n", "1", "--json", *extra])
        assert result.exit_code == 0, result.output
        return json.loads(result.output)["chosen"]["steps"]

    blank_line = steps()
    one_line = steps("--step-delimiter", "\\n")
    assert all(s.endswith("\n\n") for s in blank_line[:-1])
    assert len(one_line) > len(blank_line)
    assert all(s.endswith("\n") for s in one_line[:-1])
    capped = CliRunner().invoke(main, ["solve", Q, "-n", "1", "--json", "--max-new-tokens", "4"])
    chosen = json.loads(capped.output)["chosen"]
    assert chosen["end"] == "length"
    assert chosen["n_tokens"] == 4


def test_a_prompt_template_reaches_the_generator(tmp_path: Path) -> None:
    data = _write(tmp_path / "g.jsonl", json.dumps({"question": "What is 2+2?", "answer": "#### 4"}))
    args = ["solve", "--task", "gsm8k", "--data", str(data), "--index", "0", "--no-prm", "-n", "1", "--max-new-tokens",
            "8", "--json"]
    default = json.loads(CliRunner().invoke(main, args).output)
    short = json.loads(CliRunner().invoke(main, [*args, "--prompt-template", "{question}\\n"]).output)
    assert short["cost"]["prompt_tokens"] < default["cost"]["prompt_tokens"]  # the default asks for "The answer is N."


@pytest.mark.parametrize("typed,chain,gold", [("What is 12 + 30?", "12+30", "42"), ("what's (454+762)*3", "454+762*3", "3648"),
                                              ("compute 7 times 6", "7*6", "42")])
def test_a_question_in_words_around_an_expression_is_read_as_a_person_means_it(typed: str, chain: str, gold: str) -> None:
    result = CliRunner().invoke(main, ["solve", typed, "-n", "1", "--json"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)  # stderr may warn that the question is unlike the task's levels
    assert record["question"] == chain
    assert record["gold"] == gold
