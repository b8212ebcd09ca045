"""What runs when the user names nothing (edge_adapt.defaults): one answer per command, from what
was passed and what sits beside the generator, used by every command."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from edge_adapt.cli import main
from edge_adapt.defaults import CONSISTENCY_SPEC, DEFAULT_SPEC, DEFAULT_STRATEGIES, NO_PRM_STRATEGIES, choose, runs_without_prm
from edge_adapt.errors import ModelLoadError
from edge_adapt.models import load_default_models
from edge_adapt.settings import ModelSettings


@pytest.fixture(scope="module")
def shipped() -> ModelSettings:
    models = load_default_models()
    return ModelSettings(models.generator, models.prm)


def test_a_users_own_generator_runs_without_the_shipped_prm_unless_one_is_given() -> None:
    assert runs_without_prm(False, generator_given=True, prm_given=False)
    assert not runs_without_prm(False, generator_given=True, prm_given=True)
    assert not runs_without_prm(False, generator_given=False, prm_given=False)
    assert runs_without_prm(True, generator_given=False, prm_given=False)


def test_each_command_gets_its_task_and_search_and_keeps_what_was_given(shipped: ModelSettings) -> None:
    calibrated = json.loads(shipped.calibration_file.read_text())
    solve = choose("solve", shipped, own_generator=False)
    assert solve.vote_model is not None
    assert solve.task == calibrated["provenance"]["task"]  # the task the generator was calibrated on
    assert solve.strategies == (DEFAULT_SPEC,)  # calibrated without this PRM: value-aware sampling with it
    assert "value-aware" in solve.why
    assert choose("serve", shipped, own_generator=False).task == "default"
    assert choose("serve", shipped, own_generator=True).task == "chat"
    assert choose("bench", shipped, own_generator=False).strategies == DEFAULT_STRATEGIES
    assert choose("calibrate", shipped, own_generator=True).task == "gsm8k"
    assert choose("calibrate", shipped, own_generator=True).vote_model is None  # calibrate writes it, never reads it
    no_prm = ModelSettings(shipped.generator)
    assert choose("bench", no_prm, own_generator=False).strategies == NO_PRM_STRATEGIES
    assert choose("solve", no_prm, own_generator=False).strategies == (f"adaptive_vote:price={calibrated['price']:g}",)
    given = choose("serve", shipped, own_generator=False, task="gsm8k", strategies=("majority:n=3",))
    assert given.task == "gsm8k"
    assert given.strategies == ("majority:n=3",)
    assert given.why == "given"


def test_a_generator_without_a_calibration_gets_adaptive_consistency_and_one_for_another_is_refused(
        shipped: ModelSettings, tmp_path: Path) -> None:
    gguf = tmp_path / "other.gguf"
    gguf.write_bytes(shipped.generator.read_bytes()[:4096])
    bare = choose("solve", ModelSettings(gguf), own_generator=True)
    assert bare.strategies == (CONSISTENCY_SPEC,)
    assert bare.task == "gsm8k"
    assert bare.vote_model is None
    shutil.copy(shipped.calibration_file, ModelSettings(gguf).calibration_file)
    with pytest.raises(ModelLoadError, match="calibrated for another generator"):
        choose("solve", ModelSettings(gguf), own_generator=True)


def test_serve_refuses_a_calibration_for_another_generator_before_loading_anything(shipped: ModelSettings,
                                                                                   tmp_path: Path) -> None:
    gguf = tmp_path / "other.gguf"
    gguf.write_bytes(shipped.generator.read_bytes()[:4096])
    shutil.copy(shipped.calibration_file, ModelSettings(gguf).calibration_file)
    result = CliRunner().invoke(main, ["serve", "-m", str(gguf), "--port", "1"])
    assert result.exit_code != 0
    assert "calibrated for another generator" in result.output
    assert "loading" not in result.output


@pytest.mark.parametrize("args, flag", [
    (["serve", "--no-prm", "--strategy", "adaptive:price=8"], "--strategy adaptive:price=8 reads PRM scores"),
    (["serve", "--ctx", "512", "--max-tokens", "512"], "--ctx 512 cannot hold --max-tokens 512"),
    (["serve", "--strategy", "nonsense:n=2"], "--strategy nonsense:n=2"),
    (["solve", "12+7", "--no-prm", "-s", "best_of_n:n=4"], "--strategy best_of_n:n=4 reads PRM scores"),
    (["bench", "-o", "unused", "--no-prm", "-s", "ias_best_of_n:n_max=8"], "--strategy ias_best_of_n:n_max=8 reads PRM scores"),
])
def test_flags_that_leave_the_default_unservable_exit_2_before_any_model_loads(args: list[str], flag: str,
                                                                               tmp_path: Path) -> None:
    result = CliRunner().invoke(main, [a.replace("unused", str(tmp_path / "run")) for a in args])
    said = " ".join(result.output.split())
    assert result.exit_code == 2, said
    assert flag in said
    assert "loading" not in said
    assert not (tmp_path / "run").exists()


def test_a_search_gives_up_after_the_chat_look_the_calibrated_count_or_the_default(shipped: ModelSettings) -> None:
    from dataclasses import replace

    from edge_adapt.defaults import CHAT_LOOK, GIVE_UP_AFTER, give_up_after, read_calibration

    calibrated = read_calibration(shipped)
    assert calibrated is not None
    assert give_up_after(None, "chat") == CHAT_LOOK
    assert give_up_after(None, "gsm8k") == GIVE_UP_AFTER
    assert give_up_after(calibrated, "default") == GIVE_UP_AFTER  # the shipped calibration predates the choice
    chose = replace(calibrated, report={**calibrated.report, "give_up_after": 3})
    assert give_up_after(chose, "default") == 3
    assert give_up_after(chose, "chat") == CHAT_LOOK
