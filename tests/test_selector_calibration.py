"""`edge-adapt export selector` on a real exported PRM and its calibration file: the answer model
lands beside the PRM, is read back by adaptive search, and bad input is refused clearly."""

from __future__ import annotations

import json
import shutil

from click.testing import CliRunner

from edge_adapt.cli import main
from edge_adapt.search.calibration.answer_model import MODEL_FILE, AnswerModel


def test_export_selector_writes_the_model_beside_the_prm(llama_prm, synthetic_calib, tmp_path) -> None:
    prm_dir = tmp_path / "prm"
    shutil.copytree(llama_prm.export.path, prm_dir)
    assert not (prm_dir / MODEL_FILE).exists()
    result = CliRunner().invoke(main, ["export", "selector", str(prm_dir), "-c", str(synthetic_calib)])
    assert result.exit_code == 0, result.output
    model = AnswerModel.for_prm(prm_dir)
    held = llama_prm.counts["held_out_questions"]
    # only the questions the PRM's head never trained on (its held-out split), each with its two graded solutions
    assert model.calibrated
    assert model.provenance["questions"] == held
    assert model.provenance["samples"] == 2 * held
    assert "held-out" in model.provenance["used"]
    assert set(model.gains) == {"prm", "majority", "weighted"}
    assert model.selector in model.gains
    assert json.loads((prm_dir / MODEL_FILE).read_text())["version"] == 1
    assert "selector accuracy" in result.output.lower()


def test_export_selector_refuses_what_it_cannot_use(llama_prm, synthetic_calib, tmp_path) -> None:
    prm_dir = tmp_path / "prm"
    shutil.copytree(llama_prm.export.path, prm_dir)
    fresh_without_generator = CliRunner().invoke(main, ["export", "selector", str(prm_dir), "-c", str(synthetic_calib),
                                                        "--fresh-per-level", "5"])
    assert fresh_without_generator.exit_code == 2
    assert "--generator" in fresh_without_generator.output
    no_data = CliRunner().invoke(main, ["export", "selector", str(prm_dir), "-c", str(synthetic_calib), "--task", "gsm8k"])
    assert no_data.exit_code == 2
    assert "--data" in no_data.output
    other_temperature = CliRunner().invoke(main,
                                           ["export", "selector", str(prm_dir), "-c", str(synthetic_calib),
                                            "--temperature", "1.3"])
    assert other_temperature.exit_code == 1
    assert "fresh questions only" in other_temperature.output
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    result = CliRunner().invoke(main, ["export", "selector", str(prm_dir), "-c", str(empty)])
    assert result.exit_code == 1
    assert "usable questions" in result.output
    assert not (prm_dir / MODEL_FILE).exists()
