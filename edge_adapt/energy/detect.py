"""Finding the power meters a machine has, and saying plainly why each missing one is missing.

Checked in the order the energy policy prefers them: NVIDIA NVML, Jetson INA3221 rails, RAPL,
a laptop battery, and the always-available estimate. Only files are read (``sysfs_root`` lets
tests point at fixture trees laid out like real devices).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class MeterAvailability:
    name: str  # nvml, jetson, rapl, battery, estimate
    available: bool
    detail: str  # what it measures, or why it is not available


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
            return MeterAvailability("nvml", True, f"{name}: total energy counter (mJ)")
        except Exception:
            pass
        try:
            pynvml.nvmlDeviceGetPowerUsage(handle)
            return MeterAvailability("nvml", True, f"{name}: power samples (mW), integrated over time")
        except Exception:
            # Jetson: NVML initialises but answers "not supported" for power.
            return MeterAvailability("nvml", False, f"not available because {name} reports no power through NVML (Jetson: use the INA3221 rails)")
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
                return MeterAvailability("jetson", True, f"INA3221 rail {rail} ({hwmon})")
        return MeterAvailability("jetson", False, f"not available because the INA3221 at {hwmon} has no total input rail ({', '.join(_JETSON_INPUT_RAILS)})")
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
    return MeterAvailability("rapl", True, f"{_read(zone / 'name') or zone.name} energy counter ({zone})")


def detect_battery(sysfs_root: Path) -> MeterAvailability:
    for supply in sorted((sysfs_root / "class" / "power_supply").glob("*")):
        if _read(supply / "type") != "Battery":
            continue
        has_power = (supply / "power_now").exists() or (
            (supply / "current_now").exists() and (supply / "voltage_now").exists()
        )
        if not has_power:
            return MeterAvailability("battery", False, f"not available because {supply.name} reports neither power_now nor current_now/voltage_now")
        status = _read(supply / "status") or "Unknown"
        if status != "Discharging":
            return MeterAvailability("battery", False, f"not available because {supply.name} is {status.lower()}: battery power only measures the machine while discharging")
        return MeterAvailability("battery", True, f"{supply.name} discharge power")
    return MeterAvailability("battery", False, "not available because no battery is present")


def detect_meters(sysfs_root: str | os.PathLike[str] = "/sys") -> list[MeterAvailability]:
    """Every meter kind, in order of preference; the estimate is always last and available."""
    root = Path(sysfs_root)
    return [
        detect_nvml(),
        detect_jetson(root),
        detect_rapl(root),
        detect_battery(root),
        MeterAvailability("estimate", True, "cost model from wall time and token counts (joules labelled as estimated)"),
    ]
