"""DeepConf's online termination: a solution is cut off once its last window of tokens is less
confident than a floor. The rule on hand-made log-probabilities, then through the real llama.cpp
on a random model and as strategies on the shipped generator."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from edge_adapt import Generator, GeneratorConfig, SamplingConfigError, SamplingParams, StepEnd, StepRules
from edge_adapt.assembly import StackSettings, open_stack
from edge_adapt.generator.decoding import recent_logprobs
from edge_adapt.generator.steps import StepScanner
from edge_adapt.models import load_default_models
from edge_adapt.search.confidence import confidence_floor, trace_confidence
from edge_adapt.search.spec import parse_spec
from edge_adapt.settings import MeterSettings, ModelSettings, RunSettings
from edge_adapt.tasks import ArithmeticTask

RULES = StepRules(delimiter="\n", max_new_tokens=100, min_confidence=-1.0, confidence_window=3)
HOT = SamplingParams(temperature=1.0)


def test_a_full_window_under_the_floor_ends_the_solution_and_a_partial_one_never_does() -> None:
    scanner = StepScanner(RULES, generated_before=0)
    assert scanner.push(b"a", False, -5.0) is None  # one token: no full window yet
    assert scanner.push(b"b", False, -5.0) is None
    assert scanner.push(b"c", False, -5.0) is StepEnd.LOW_CONFIDENCE
    scanner = StepScanner(RULES, generated_before=0)
    ends = [scanner.push(b"x", False, lp) for lp in (-2.0, -0.5, -0.4, -0.2, -2.5, -0.4, -0.3)]
    # windows: -0.967, -0.367, -1.033 (cut at the fifth token)
    assert ends[:4] == [None] * 4
    assert ends[4] is StepEnd.LOW_CONFIDENCE
    assert not StepEnd.LOW_CONFIDENCE.finished
    assert StepEnd.LOW_CONFIDENCE.ends_solution


def test_the_window_spans_steps_and_an_answer_or_eog_wins_over_the_floor() -> None:
    scanner = StepScanner(RULES, generated_before=2, recent_logprobs=[-3.0, -3.0])  # the step before ended unsure
    assert scanner.push(b"d", False, -0.1) is StepEnd.LOW_CONFIDENCE  # (-3 - 3 - 0.1) / 3
    assert StepScanner(RULES, 2, [-3.0, -3.0]).push(b"e", True, -0.1) is StepEnd.EOG
    assert StepScanner(StepRules(delimiter="\n"), 2, [-9.0, -9.0]).push(b"d", False, -9.0) is None  # no floor: never


@pytest.mark.parametrize("floor", [math.inf, 0.5, math.nan])
def test_a_floor_must_be_a_log_probability(floor: float) -> None:
    with pytest.raises(SamplingConfigError, match="min_confidence"):
        StepRules(min_confidence=floor)
    with pytest.raises(SamplingConfigError, match="confidence_window"):
        StepRules(min_confidence=-1.0, confidence_window=0)


def test_the_floor_is_the_warm_up_quantile() -> None:
    assert confidence_floor([-1.0, -2.0, -3.0, -4.0, -5.0], keep=0.75) == -4.0
    assert confidence_floor([-1.0], keep=0.9) == -1.0
    with pytest.raises(ValueError):
        confidence_floor([], keep=0.9)


@pytest.fixture
def gen(random_gguf: Path):
    """F32 KV cache, no flash attention: a batch that loses branches computes the others' logits as
    before, to float rounding."""
    g = Generator(random_gguf, GeneratorConfig(n_ctx=1024, n_seq_max=20, kv_type="f32", flash_attn=False))
    yield g
    g.close()


def test_cut_solutions_are_the_uncut_ones_stopped_at_their_first_window_under_the_floor(gen: Generator) -> None:
    """The same seed draws the same tokens: a solution cut off is exactly the uncut one's prefix
    up to its first window under the floor; one that never dips runs to its end unchanged."""
    rules = StepRules(delimiter="\x00\x01", max_step_tokens=10, max_new_tokens=40)
    full = _draw(gen, rules)
    lowest = sorted(trace_confidence(logprobs).lowest for logprobs in full)
    middle = len(lowest) // 2
    floor = (lowest[middle - 1] + lowest[middle]) / 2  # about half of them dip below it, none grazes it
    cut = _draw(gen, StepRules(delimiter="\x00\x01", max_step_tokens=10, max_new_tokens=40, min_confidence=floor))
    stopped = 0
    for whole, part in zip(full, cut, strict=True):
        windows = [sum(whole[i - 16:i]) / 16 for i in range(16, len(whole) + 1)]
        first = next((i for i, w in enumerate(windows) if w < floor), None)
        expected = whole if first is None else whole[: first + 16]
        assert part == pytest.approx(expected, abs=1e-4)
        stopped += first is not None
    assert 0 < stopped < len(full)


def _draw(gen: Generator, rules: StepRules) -> list[list[float]]:
    root = gen.prefill("Q:12+34\n", seed=7, reuse_cache=False)
    leaves, _ = gen.complete([root], 8, sampling=HOT, rules=rules, max_steps=8)
    gen.release(root)
    leaves.sort(key=lambda leaf: leaf.steps()[0].seed)  # leaves come in the order they ended; a seed names a sample
    ends = [leaf.end for leaf in leaves]
    logprobs = [[lp for step in leaf.steps() for lp in step.logprobs] for leaf in leaves]
    if rules.min_confidence is not None:
        assert all((e is StepEnd.LOW_CONFIDENCE) == (trace_confidence(lps).lowest < rules.min_confidence)
                   for e, lps in zip(ends, logprobs, strict=True) if len(lps) >= 16)  # shorter: no full window
    return logprobs


def test_recent_log_probabilities_walk_back_over_steps_to_the_prompt(gen: Generator) -> None:
    root = gen.prefill("Q:1+2\n", seed=1)
    rules = StepRules(delimiter="\x00\x01", max_step_tokens=5, max_new_tokens=40)
    first = gen.expand([root], 1, sampling=HOT, rules=rules).children[0]
    second = gen.expand([first], 1, sampling=HOT, rules=rules).children[0]
    assert recent_logprobs(second, 7) == list(first.logprobs[-2:] + second.logprobs)
    assert recent_logprobs(second, 50) == list(first.logprobs + second.logprobs)  # never the prompt's
    assert recent_logprobs(root, 5) == []
    gen.release(root, first, second)


@pytest.mark.parametrize("spec", ["deepconf_online:n=8", "adaptive_vote:price=2,keep=0.5,warmup=2"])
def test_online_termination_as_a_strategy_cuts_only_after_the_warm_up(spec: str) -> None:
    strategy = parse_spec(spec)
    assert strategy.name == spec
    assert not strategy.needs_prm
    task = ArithmeticTask()
    cut_any = 0
    run = RunSettings(ModelSettings(load_default_models().generator), meter=MeterSettings("estimate"))
    with open_stack(StackSettings(run, task, (strategy,))) as stack:
        for index in (0, 100, 200, 300, 400, 450):
            result = stack.searcher.run(strategy, task.problem("test", index), seed=index)
            kind = "confidence_cut" if spec.startswith("deepconf") else "adaptive_vote"
            record = next(d for d in result.decisions if d.kind == kind)
            warmup = 4 if spec.startswith("deepconf") else 2
            ends = [c.end for c in result.candidates]
            assert all(e is not StepEnd.LOW_CONFIDENCE for e in ends[:warmup])
            cut = sum(e is StepEnd.LOW_CONFIDENCE for e in ends)
            assert record.cut == cut or (record.cut is None and cut == 0)
            assert result.chosen is None or result.chosen.end is not StepEnd.LOW_CONFIDENCE
            if spec.startswith("deepconf"):
                assert record.drawn == len(result.candidates) == 8
                later = [c for c in result.candidates[warmup:] if c.n_tokens >= 16]  # shorter: no full window
                assert all((c.end is StepEnd.LOW_CONFIDENCE) == (c.confidence.lowest < record.floor - 1e-4) for c in later
                           if abs(c.confidence.lowest - record.floor) > 2e-4)
            cut_any += cut
    assert cut_any > 0
