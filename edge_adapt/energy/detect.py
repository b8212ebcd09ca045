"""Finding the power meters a machine has, and saying plainly why each missing one is missing.

Checked in the order the energy policy prefers them: NVIDIA NVML, Jetson INA3221 rails, RAPL,
a laptop battery, and the always-available estimate. Only files are read (``sysfs_root`` lets
tests point at fixture trees laid out like real devices).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from edge_adapt.energy.cost_model import DEFAULT_COST_MODELS, CostModel, Usage
from edge_adapt.energy.meters import (
    EstimateMeter,
    Meter,
    battery_meter,
    jetson_rail_meter,
    nvml_meter,
    rapl_meter,
)
from edge_adapt.errors import MeterError

METER_KINDS = ("nvml", "jetson", "rapl", "battery", "estimate")


@dataclass(frozen=True)
class MeterAvailability:
    name: str  # nvml, jetson, rapl, battery, estimate
    available: bool
    detail: str  # what it measures, or why it is not available
    open: Callable[[], Meter] | None = field(default=None, compare=False, repr=False)


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def detect_nvml() -> MeterAvailability:
    try:
        import pynvml
    except ImportError:
        return MeterAvailability("nvml", False, "not available because nvidia-ml-py is not installed (pip install nvidia-ml-py)")
    try:
        pynvml.nvmlInit()
    except Exception as exc:  # pynvml.NVMLError subclasses per cause
        return MeterAvailability("nvml", False, f"not available because NVML did not initialise ({exc}); no NVIDIA driver?")
    try:
        count = pynvml.nvmlDeviceGetCount()
        if count == 0:
            return MeterAvailability("nvml", False, "not available because NVML sees no GPU")
        handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        name = pynvml.nvmlDeviceGetName(handle)
        name = name.decode() if isinstance(name, bytes) else name
        try:
            pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
            return MeterAvailability("nvml", True, f"{name}: total energy counter (mJ)", nvml_meter)
        except Exception:
            pass
        try:
            pynvml.nvmlDeviceGetPowerUsage(handle)
            return MeterAvailability("nvml", True, f"{name}: power samples (mW), integrated over time", nvml_meter)
        except Exception:
            # Jetson: NVML initialises but answers "not supported" for power.
            return MeterAvailability("nvml", False,
                                     f"not available because {name} reports no power through NVML (Jetson: use the INA3221 "
                                     f"rails)")
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            pass


_JETSON_INPUT_RAILS = ("VDD_IN", "POM_5V_IN")


def detect_jetson(sysfs_root: Path) -> MeterAvailability:
    for hwmon in sorted((sysfs_root / "class" / "hwmon").glob("hwmon*")):
        if _read(hwmon / "name") != "ina3221":
            continue
        labels = {_read(p): p for p in hwmon.glob("in*_label")}
        for rail in _JETSON_INPUT_RAILS:
            if rail in labels:
                channel = labels[rail].name.removeprefix("in").removesuffix("_label")
                missing = [f for f in (f"in{channel}_input", f"curr{channel}_input") if not os.access(hwmon / f, os.R_OK)]
                if missing:
                    return MeterAvailability("jetson", False,
                                             f"not available because {', '.join(str(hwmon / f) for f in missing)} cannot be read")
                mode = jetson_power_mode(sysfs_root)
                detail = f"INA3221 rail {rail} ({hwmon})" + (f", power mode {mode}" if mode else "")
                return MeterAvailability("jetson", True, detail, partial(jetson_rail_meter, hwmon, channel, rail))
        return MeterAvailability("jetson", False,
                                 f"not available because the INA3221 at {hwmon} has no total input rail "
                                 f"({', '.join(_JETSON_INPUT_RAILS)})")
    return MeterAvailability("jetson", False, "not available because no INA3221 power monitor is exposed in sysfs (not a Jetson)")


def detect_rapl(sysfs_root: Path) -> MeterAvailability:
    zones = sorted((sysfs_root / "class" / "powercap").glob("intel-rapl:*"))
    packages = [z for z in zones if (z / "energy_uj").exists() and ":" not in z.name.split("intel-rapl:")[1]]
    if not packages:
        return MeterAvailability("rapl", False, "not available because /sys/class/powercap has no RAPL package zone")
    zone = packages[0]
    if not os.access(zone / "energy_uj", os.R_OK) or _read(zone / "energy_uj") is None:
        return MeterAvailability(
            "rapl", False,
            f"not available because {zone / 'energy_uj'} is readable by root only (run as root, or chmod o+r it)",
        )
    return MeterAvailability("rapl", True, f"{_read(zone / 'name') or zone.name} energy counter ({zone})",
                             partial(rapl_meter, zone))


def detect_battery(sysfs_root: Path) -> MeterAvailability:
    for supply in sorted((sysfs_root / "class" / "power_supply").glob("*")):
        if _read(supply / "type") != "Battery":
            continue
        has_power = (supply / "power_now").exists() or (
            (supply / "current_now").exists() and (supply / "voltage_now").exists()
        )
        if not has_power:
            return MeterAvailability("battery", False,
                                     f"not available because {supply.name} reports neither power_now nor current_now/voltage_now")
        status = _read(supply / "status") or "Unknown"
        if status != "Discharging":
            return MeterAvailability("battery", False,
                                     f"not available because {supply.name} is {status.lower()}: battery power only measures the "
                                     f"machine while discharging")
        return MeterAvailability("battery", True, f"{supply.name} discharge power", partial(battery_meter, supply))
    return MeterAvailability("battery", False, "not available because no battery is present")


def detect_meters(sysfs_root: str | os.PathLike[str] = "/sys", *, nvml: bool = True) -> list[MeterAvailability]:
    """Every meter kind, in order of preference; the estimate is always last and available.

    ``nvml=False`` skips the NVML probe (tests that read fixture sysfs trees on a GPU machine)."""
    root = Path(sysfs_root)
    return [
        detect_nvml() if nvml else MeterAvailability("nvml", False, "not probed"),
        detect_jetson(root),
        detect_rapl(root),
        detect_battery(root),
        MeterAvailability("estimate", True, "cost model from wall time and token counts (joules labelled as estimated)"),
    ]


def jetson_power_mode(sysfs_root: Path) -> str | None:
    """The nvpmodel power mode (e.g. ``"0"``), from nvpmodel's status file next to the sysfs root."""
    status = _read(sysfs_root.parent / "var" / "lib" / "nvpmodel" / "status")
    if status and status.startswith("pmode:"):
        return str(int(status.removeprefix("pmode:")))
    return None


def open_meter(
    prefer: str | None = None,
    *,
    usage: Callable[[], Usage] = Usage,
    cost_model: CostModel | None = None,
    sysfs_root: str | os.PathLike[str] = "/sys",
    nvml: bool = True,
    measured_only: bool = False,
) -> Meter:
    """The best meter this machine has (or the one named by ``prefer``), else the estimate.

    ``usage`` returns the work done so far (token counts); only the estimate needs it.
    ``measured_only`` refuses the estimate (fitting a cost model needs a real meter).
    """
    if prefer is not None and prefer not in METER_KINDS:
        raise MeterError(f"unknown meter {prefer!r}; choose one of {', '.join(METER_KINDS)}")
    found = detect_meters(sysfs_root, nvml=nvml)
    for meter in found:
        if prefer is not None and meter.name != prefer:
            continue
        if meter.name == "estimate" and measured_only:
            reasons = "; ".join(f"{m.name}: {m.detail}" for m in found if m.name != "estimate")
            raise MeterError(f"this needs a real meter and this machine has none ({reasons})")
        if meter.name == "estimate":
            return EstimateMeter(cost_model or DEFAULT_COST_MODELS[default_device_class(found)], usage)
        if meter.available and meter.open is not None:
            return meter.open()
        if prefer is not None:
            raise MeterError(f"meter {prefer!r} is {meter.detail}")
    raise AssertionError("the estimate is always available")


def default_device_class(found: list[MeterAvailability]) -> str:
    """Which default cost coefficients fit this machine: a Jetson, a GPU box, or a CPU."""
    by_name = {m.name: m for m in found}
    if by_name["jetson"].available:
        return "jetson"
    if by_name["nvml"].available:
        return "gpu"
    return "cpu"
