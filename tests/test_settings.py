"""The shared settings: one object from the CLI options to config.json and a calibration's provenance."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from edge_adapt.bench.runner import BenchConfig
from edge_adapt.cli.options import PROMPT_FIELDS, prompt_options
from edge_adapt.errors import EdgeAdaptError
from edge_adapt.settings import PromptSettings
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
    assert CliRunner().invoke(command, []).exit_code == 0 and seen[-1] == PromptSettings()
    assert {param.name for param in command.params} == set(PROMPT_FIELDS)  # one option per field


def test_a_bench_config_writes_the_prompt_flat_as_runs_always_have() -> None:
    prompt = PromptSettings(chat=True, system="Be brief.", prompt_template="Q: {question}", step_delimiter="\n", max_new_tokens=9)
    written = BenchConfig(generator="g.gguf", prm=None, prompt=prompt).to_json()
    assert {k: written[k] for k in PROMPT_FIELDS} == prompt.as_record() and "prompt" not in written
    assert PromptSettings.from_record(written) == prompt


def test_unset_fields_come_from_a_record_and_the_rules_from_the_task() -> None:
    recorded = {"chat": True, "system": "S", "step_delimiter": "\n", "max_new_tokens": 128, "temperature": 0.7}
    given = PromptSettings(system="mine").or_else(recorded)
    assert given == PromptSettings(chat=True, system="mine", step_delimiter="\n", max_new_tokens=128)
    rules = given.rules(ArithmeticTask())
    assert rules.delimiter == "\n" and rules.max_new_tokens == 128
    assert PromptSettings().rules(ArithmeticTask()) == ArithmeticTask().step_rules
    assert PromptSettings().with_chat(True).chat is True and PromptSettings(chat=False).with_chat(True).chat is False


@pytest.mark.parametrize("bad", [{"max_new_tokens": 0}, {"max_new_tokens": True}, {"step_delimiter": ""}])
def test_bad_prompt_settings_are_refused(bad: dict) -> None:
    with pytest.raises(EdgeAdaptError):
        PromptSettings(**bad)


def test_a_stack_refuses_a_prompt_template_its_task_does_not_hold() -> None:
    from edge_adapt.assembly import StackSettings
    from edge_adapt.tasks import get_task

    task = get_task("gsm8k", None, "Q: {question}\nA:")
    StackSettings(Path("g.gguf"), None, task, (), prompt=PromptSettings(prompt_template="Q: {question}\nA:"))
    with pytest.raises(EdgeAdaptError, match="not the task's"):
        StackSettings(Path("g.gguf"), None, ArithmeticTask(), (), prompt=PromptSettings(prompt_template="Q: {question}\nA:"))
