"""The shared settings: one object from the CLI options to config.json and a calibration's provenance."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from edge_adapt.bench.runner import BenchConfig
from edge_adapt.budget.guard import Budget
from edge_adapt.cli.options import PROMPT_FIELDS, budget_options, prompt_options
from edge_adapt.errors import EdgeAdaptError
from edge_adapt.generator import SamplingParams
from edge_adapt.settings import MeterSettings, ModelSettings, PromptSettings, RunSettings, budget_record
from edge_adapt.tasks import ArithmeticTask


def test_options_become_one_prompt_settings_object() -> None:
    seen: list[PromptSettings] = []

    @click.command()
    @prompt_options
    def command(prompt: PromptSettings) -> None:
        seen.append(prompt)

    result = CliRunner().invoke(command, ["--no-chat", "--step-delimiter", "\\n", "--max-new-tokens", "64", "--system", "Hi"])
    assert result.exit_code == 0, result.output
    assert seen == [PromptSettings(chat=False, system="Hi", step_delimiter="\n", max_new_tokens=64)]
    assert CliRunner().invoke(command, []).exit_code == 0
    assert seen[-1] == PromptSettings()
    assert {param.name for param in command.params} == set(PROMPT_FIELDS)  # one option per field


def test_a_bench_config_writes_the_prompt_flat_as_runs_always_have() -> None:
    prompt = PromptSettings(chat=True, system="Be brief.", prompt_template="Q: {question}", step_delimiter="\n", max_new_tokens=9)
    written = BenchConfig(RunSettings(ModelSettings(Path("g.gguf")), prompt)).to_json()
    assert {k: written[k] for k in PROMPT_FIELDS} == prompt.as_record()
    assert "prompt" not in written
    assert PromptSettings.from_record(written) == prompt


def test_unset_fields_come_from_a_record_and_the_rules_from_the_task() -> None:
    recorded = {"chat": True, "system": "S", "step_delimiter": "\n", "max_new_tokens": 128, "temperature": 0.7}
    given = PromptSettings(system="mine").or_else(recorded)
    assert given == PromptSettings(chat=True, system="mine", step_delimiter="\n", max_new_tokens=128)
    rules = given.rules(ArithmeticTask())
    assert rules.delimiter == "\n"
    assert rules.max_new_tokens == 128
    assert PromptSettings().rules(ArithmeticTask()) == ArithmeticTask().step_rules
    assert PromptSettings().with_chat(True).chat is True
    assert PromptSettings(chat=False).with_chat(True).chat is False


@pytest.mark.parametrize("bad", [{"max_new_tokens": 0}, {"max_new_tokens": True}, {"step_delimiter": ""}])
def test_bad_prompt_settings_are_refused(bad: dict) -> None:
    with pytest.raises(EdgeAdaptError):
        PromptSettings(**bad)


def test_a_stack_refuses_a_prompt_template_its_task_does_not_hold() -> None:
    from edge_adapt.assembly import StackSettings
    from edge_adapt.tasks import get_task

    task = get_task("gsm8k", None, "Q: {question}\nA:")
    templated = RunSettings(ModelSettings(Path("g.gguf")), PromptSettings(prompt_template="Q: {question}\nA:"))
    StackSettings(templated, task, ())
    with pytest.raises(EdgeAdaptError, match="not the task's"):
        StackSettings(templated, ArithmeticTask(), ())


# config.json as runs recorded it before the settings tree (less the fingerprints and what the stack
# adds): a run started then resumes now only if the tree writes exactly this
RECORDED_BEFORE_THE_TREE = {
    "budget": {"energy_j": 5.0}, "chat": None, "cost_model": None, "data": None, "generator": "g.gguf", "gpu_layers": 0,
    "limit": 60, "max_new_tokens": None, "max_steps": 32, "meter": "estimate", "prm": "prm", "prompt_template": None,
    "seed": 3, "step_delimiter": None, "strategies": ["majority:n=16"], "system": None, "task": "default",
    "temperature": 0.7, "vote_model": True,
}


def test_the_tree_writes_config_json_as_runs_before_it_did() -> None:
    run = RunSettings(ModelSettings(Path("g.gguf"), Path("prm"), threads=4), budget=Budget(energy_j=5.0),
                      meter=MeterSettings("estimate"))
    config = BenchConfig(run, strategies=("majority:n=16",), limit=60, seed=3)
    assert config.to_json() == RECORDED_BEFORE_THE_TREE
    # what a run did not set stays out of the record; what it set goes in
    changed_run = replace(run, sampling=SamplingParams(temperature=1.0, top_p=0.9), meter=MeterSettings(measured_only=True),
                          models=replace(run.models, calibration=Path("c.json")))
    changed = replace(config, run=changed_run, question_seed=2).to_json()
    assert {k: changed[k] for k in ("temperature", "top_p", "measured_only", "question_seed", "meter", "calibration")} == \
        {"temperature": 1.0, "top_p": 0.9, "measured_only": True, "question_seed": 2, "meter": None, "calibration": "c.json"}
    assert "top_k" not in changed
    assert "threads" not in changed  # threads say how fast, not what


def test_budget_and_meter_options_become_one_object_each() -> None:
    seen: list[tuple[Budget, MeterSettings]] = []

    @click.command()
    @budget_options
    def command(budget: Budget, meter: MeterSettings) -> None:
        seen.append((budget, meter))

    result = CliRunner().invoke(command, ["--energy", "5", "--tokens", "300", "--meter", "estimate"])
    assert result.exit_code == 0, result.output
    assert seen == [(Budget(energy_j=5.0, tokens=300), MeterSettings("estimate"))]
    assert CliRunner().invoke(command, []).exit_code == 0
    assert seen[-1] == (Budget(), MeterSettings())
    assert budget_record(seen[-1][0]) == {}


@pytest.mark.parametrize("bad", [{"threads": 0}, {"threads": True}])
def test_bad_model_settings_are_refused(bad: dict) -> None:
    with pytest.raises(EdgeAdaptError, match="threads"):
        ModelSettings(Path("g.gguf"), **bad)


def test_every_setting_is_declared_once_across_the_trees() -> None:
    """A stack, a benchmark and a server compose the same parts; none redeclares a part's field."""
    from dataclasses import fields as fields_of

    from edge_adapt.assembly import StackSettings
    from edge_adapt.server import Offer, ServeConfig
    from edge_adapt.server.jobs import ServerSettings
    from edge_adapt.settings import RunSettings

    def names(cls: type) -> set[str]:
        return {f.name for f in fields_of(cls)}

    parts = {"run": names(RunSettings), "offer": names(Offer)}
    # what a loaded server hands each request as its starting budget: the stack's, read at load
    request_default = {ServerSettings: {"budget"}}
    for tree in (StackSettings, BenchConfig, ServeConfig, ServerSettings):
        for part, declared in parts.items():
            assert names(tree) & declared - request_default.get(tree, set()) == set(), (tree.__name__, part)
    assert {"run"} <= names(StackSettings) & names(BenchConfig)
    assert {"offer"} <= names(ServeConfig) & names(ServerSettings)
