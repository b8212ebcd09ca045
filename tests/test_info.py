"""``edge-adapt info``, the ONNX Runtime provider probe, and power-meter detection."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from click.testing import CliRunner

from edge_adapt.cli import main
from edge_adapt.energy import detect_meters
from edge_adapt.prm.providers import PROBE_MODEL, check_provider, probe_expected


def test_info_json_reports_the_real_environment() -> None:
    result = CliRunner().invoke(main, ["info", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["packages"]["llama-cpp-python"]
    assert "AVX" in report["llama_system_info"] or "NEON" in report["llama_system_info"]
    assert any(d["kind"] == "cpu" for d in report["llama_devices"])
    cpu = next(p for p in report["onnx_providers"] if p["name"] == "CPUExecutionProvider")
    assert cpu["works"]
    assert "probe ran" in cpu["detail"]
    assert [m["name"] for m in report["meters"]][-1] == "estimate"


def test_info_table_output() -> None:
    result = CliRunner().invoke(main, ["info"])
    assert result.exit_code == 0, result.output
    for heading in ("llama.cpp", "GPU offload compiled in", "ONNX Runtime providers", "Power meters"):
        assert heading in result.output


def test_probe_model_is_the_documented_function() -> None:
    session = ort.InferenceSession(str(PROBE_MODEL), providers=["CPUExecutionProvider"])
    x = np.linspace(-2, 2, 24, dtype=np.float32).reshape(3, 8)
    (y,) = session.run(None, {"x": x})
    np.testing.assert_allclose(y, probe_expected(x), atol=1e-6)


def test_a_provider_that_cannot_initialise_is_not_reported_as_working() -> None:
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this machine's onnxruntime has CUDA; the check below needs a CPU-only build")
    check = check_provider("CUDAExecutionProvider")
    assert not check.works
    assert check.detail


# -- meters, on sysfs trees laid out as on the real devices --------------------------------------


def _write(root: Path, rel: str, text: str) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def by_name(root: Path) -> dict[str, object]:
    return {m.name: m for m in detect_meters(root)}


def test_jetson_orin_rails(tmp_path: Path) -> None:
    hw = "class/hwmon/hwmon1"
    _write(tmp_path, f"{hw}/name", "ina3221\n")
    for i, label in enumerate(["VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC"], start=1):
        _write(tmp_path, f"{hw}/in{i}_label", label + "\n")
        _write(tmp_path, f"{hw}/in{i}_input", "5000\n")
        _write(tmp_path, f"{hw}/curr{i}_input", "1200\n")
    meters = by_name(tmp_path)
    assert meters["jetson"].available
    assert "VDD_IN" in meters["jetson"].detail
    assert not meters["rapl"].available
    assert not meters["battery"].available


def test_jetson_nano_rail_name(tmp_path: Path) -> None:
    _write(tmp_path, "class/hwmon/hwmon0/name", "ina3221\n")
    _write(tmp_path, "class/hwmon/hwmon0/in1_label", "POM_5V_IN\n")
    assert "cannot be read" in by_name(tmp_path)["jetson"].detail  # a label without its readings
    _write(tmp_path, "class/hwmon/hwmon0/in1_input", "5000\n")
    _write(tmp_path, "class/hwmon/hwmon0/curr1_input", "900\n")
    assert by_name(tmp_path)["jetson"].available


def test_rapl_laptop_and_root_only_counter(tmp_path: Path) -> None:
    zone = "class/powercap/intel-rapl:0"
    _write(tmp_path, f"{zone}/name", "package-0\n")
    counter = _write(tmp_path, f"{zone}/energy_uj", "123456789\n")
    _write(tmp_path, f"{zone}/max_energy_range_uj", "262143328850\n")
    _write(tmp_path, "class/powercap/intel-rapl:0:0/energy_uj", "5\n")  # a sub-zone, not a package
    meters = by_name(tmp_path)
    assert meters["rapl"].available
    assert "package-0" in meters["rapl"].detail
    if os.geteuid() == 0:
        return  # root reads everything: the permission case cannot be reproduced
    counter.chmod(0o000)
    assert "root" in by_name(tmp_path)["rapl"].detail


def test_battery_only_counts_while_discharging(tmp_path: Path) -> None:
    bat = "class/power_supply/BAT0"
    _write(tmp_path, f"{bat}/type", "Battery\n")
    _write(tmp_path, f"{bat}/status", "Charging\n")
    _write(tmp_path, f"{bat}/current_now", "1500000\n")
    _write(tmp_path, f"{bat}/voltage_now", "11400000\n")
    _write(tmp_path, "class/power_supply/AC/type", "Mains\n")
    meters = by_name(tmp_path)
    assert not meters["battery"].available
    assert "charging" in meters["battery"].detail
    _write(tmp_path, f"{bat}/status", "Discharging\n")
    assert by_name(tmp_path)["battery"].available


def test_nothing_measurable_falls_back_to_the_estimate(tmp_path: Path) -> None:
    meters = detect_meters(tmp_path)
    assert [m.name for m in meters] == ["nvml", "jetson", "rapl", "battery", "estimate"]
    assert [m.available for m in meters[1:]] == [False, False, False, True]
    assert all(m.detail.startswith("not available because") for m in meters[1:4])
