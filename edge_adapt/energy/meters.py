"""Energy meters: one interface over NVML, Jetson INA3221 rails, RAPL, laptop batteries and the
cost-model estimate.

Every meter reports *cumulative* joules since it was opened and, where the source gives it, the
instantaneous power, with a source label on every reading. Counter sources (RAPL, NVML's total
energy) are differenced, with wrap-around handled; power-only sources (Jetson rails, batteries,
NVML power) are integrated by a background sampler, because energy spent between two reads would
otherwise be invisible. Only files are read for sysfs sources, so tests point ``sysfs_root`` at
fixture trees laid out like the real devices.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edge_adapt.cores import allowed_cpus, glance, others_busy
from edge_adapt.energy.cost_model import CostModel, Usage
from edge_adapt.errors import MeterError

log = logging.getLogger(__name__)

BUSY_CORES = 0.5  # other processes keeping this much busy make an estimate's reading "+busy"
BUSY_LOOK_S = 1.0  # ... measured over at least this long
BUSY_LABEL = "+busy"
GLANCE_S = 0.1  # the estimate looks at other processes' load at most this often


@dataclass(frozen=True)
class EnergyReading:
    joules: float  # cumulative since the meter was opened
    watts: float | None  # instantaneous (or last-interval) power, when known
    source: str  # e.g. "rapl:package-0", "jetson:VDD_IN", "battery:BAT0", "estimate:cpu-laptop"
    estimated: bool  # True when the joules come from the cost model, not a measurement
    timestamp: float  # time.monotonic() of the reading


class Meter:
    """Base class: ``read()`` returns an :class:`EnergyReading`; ``close()`` stops any sampler."""

    source: str = "unknown"
    estimated: bool = False

    def read(self) -> EnergyReading:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self) -> Meter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_number(path: Path) -> float:
    """A sysfs number; a clear MeterError when the file vanished or is unreadable."""
    try:
        return float(path.read_text().strip())
    except PermissionError as exc:
        raise MeterError(f"{path}: permission denied (readable by root only?); run as root or make it readable") from exc
    except (OSError, ValueError) as exc:
        raise MeterError(f"{path}: cannot read a number ({exc})") from exc


# -- counters -----------------------------------------------------------------------------------


class CounterMeter(Meter):
    """Differences a monotonically increasing energy counter that wraps at ``wrap_at``.

    One wrap between two reads is recovered exactly; the policy reads the meter at least every
    expansion, far more often than RAPL's counter wraps (tens of minutes at full package power).
    After a gap long enough for more wraps at the average power seen so far, the wraps that power
    implies are added and a warning says the reading is inexact.
    """

    def __init__(self, read_counter: Callable[[], float], scale_j: float, wrap_at: float | None, source: str) -> None:
        self._read_counter = read_counter
        self._scale = scale_j
        self._wrap_at = wrap_at
        self.source = source
        self._lock = threading.Lock()
        self._last = read_counter()
        self._last_t = self._t0 = time.monotonic()
        self._joules = 0.0
        self._watts: float | None = None

    def read(self) -> EnergyReading:
        with self._lock:
            now, t = self._read_counter(), time.monotonic()
            delta = now - self._last
            if delta < 0:
                if self._wrap_at is None:
                    log.warning("%s: energy counter went backwards (%s -> %s), no wrap: ignored", self.source, self._last, now)
                    delta = 0.0
                else:
                    delta += self._wrap_at
            seen_s = self._last_t - self._t0
            if self._wrap_at is not None and seen_s >= 1.0 and self._joules > 0:
                # whole wraps the average power implies beyond the one the counter shows (the
                # average over at least a second: two reads a millisecond apart say little)
                average_w = self._joules / seen_s
                expected = average_w * (t - self._last_t) / self._scale
                missed = math.floor((expected - delta) / self._wrap_at + 0.5)
                if missed > 0:
                    log.warning("%s: %.0f s since the last read, long enough for %d more counter wraps at %.1f W; "
                                "added them, the joules are inexact (read the meter more often)",
                                self.source, t - self._last_t, missed, average_w)
                    delta += missed * self._wrap_at
            joules = delta * self._scale
            if t > self._last_t and delta > 0:
                self._watts = joules / (t - self._last_t)
            self._joules += joules
            self._last, self._last_t = now, t
            return EnergyReading(self._joules, self._watts, self.source, False, t)


def rapl_meter(zone: Path) -> CounterMeter:
    """RAPL package zone: ``energy_uj`` (µJ), wrapping at ``max_energy_range_uj``."""
    energy = zone / "energy_uj"
    wrap_file = zone / "max_energy_range_uj"
    wrap = read_number(wrap_file) + 1 if wrap_file.exists() else None
    name = (zone / "name").read_text().strip() if (zone / "name").exists() else zone.name
    return CounterMeter(lambda: read_number(energy), 1e-6, wrap, f"rapl:{name}")


# -- power samplers -----------------------------------------------------------------------------


class SampledPowerMeter(Meter):
    """Integrates power samples (trapezoid rule) in a daemon thread every ``interval_s``.

    Reads also take a sample, so short runs are covered even with a slow interval.
    """

    def __init__(self, read_watts: Callable[[], float], source: str, interval_s: float = 0.05) -> None:
        self._read_watts = read_watts
        self.source = source
        self._lock = threading.Lock()
        self._joules = 0.0
        self._last_w = read_watts()
        self._last_t = time.monotonic()
        self._error: MeterError | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, args=(interval_s,), name=f"meter-{source}", daemon=True)
        self._thread.start()

    def _sample(self) -> EnergyReading:
        with self._lock:
            try:
                w = float(self._read_watts())
            except MeterError:
                raise
            except Exception as exc:  # a driver or library error: the meter cannot be trusted from here
                raise MeterError(f"{self.source}: reading the power failed ({exc!r})") from exc
            if not (math.isfinite(w) and w >= 0):
                raise MeterError(f"{self.source}: the power read is {w!r} W, not a finite number >= 0")
            t = time.monotonic()
            self._joules += 0.5 * (w + self._last_w) * (t - self._last_t)
            self._last_w, self._last_t = w, t
            return EnergyReading(self._joules, w, self.source, False, t)

    def _loop(self, interval_s: float) -> None:
        while not self._stop.wait(interval_s):
            try:
                self._sample()
            except MeterError as exc:  # surfaced by the next read() in the caller's thread
                self._error = exc
                return

    def read(self) -> EnergyReading:
        if self._error is not None:
            raise self._error
        return self._sample()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=1.0)


def jetson_rail_meter(hwmon: Path, channel: str, rail: str, interval_s: float = 0.05) -> SampledPowerMeter:
    """An INA3221 rail: ``in{n}_input`` (mV) x ``curr{n}_input`` (mA)."""
    volts, amps = hwmon / f"in{channel}_input", hwmon / f"curr{channel}_input"
    return SampledPowerMeter(lambda: read_number(volts) * read_number(amps) * 1e-6, f"jetson:{rail}", interval_s)


def battery_meter(supply: Path, interval_s: float = 0.05) -> SampledPowerMeter:
    """Discharge power: ``power_now`` (µW), or ``current_now`` (µA) x ``voltage_now`` (µV)."""
    power = supply / "power_now"

    status = supply / "status"

    def watts() -> float:
        if status.exists() and (state := status.read_text().strip()) != "Discharging":
            raise MeterError(f"battery {supply.name} is {state.lower()}, not discharging: its power is no longer this "
                             "device's draw; unplug the charger for the whole run, or use another meter")
        if power.exists():
            return read_number(power) * 1e-6
        return read_number(supply / "current_now") * read_number(supply / "voltage_now") * 1e-12

    return SampledPowerMeter(watts, f"battery:{supply.name}", interval_s)


# -- NVML ---------------------------------------------------------------------------------------


def nvml_meter(index: int = 0, interval_s: float = 0.05) -> Meter:
    """GPU ``index`` through NVML: the total energy counter (mJ) where supported, else power samples."""
    try:
        import pynvml
    except ImportError as exc:
        raise MeterError("NVML needs nvidia-ml-py: pip install nvidia-ml-py") from exc
    try:
        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
    except Exception as exc:
        raise MeterError(f"NVML did not initialise ({exc}); is the NVIDIA driver loaded?") from exc
    name = pynvml.nvmlDeviceGetName(handle)
    name = name.decode() if isinstance(name, bytes) else name
    try:
        pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
        return CounterMeter(lambda: float(pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)), 1e-3, None, f"nvml:{name}")
    except Exception:
        pass
    try:
        pynvml.nvmlDeviceGetPowerUsage(handle)
    except Exception as exc:
        raise MeterError(f"{name} reports no power through NVML ({exc}); on a Jetson use the INA3221 rails") from exc
    return SampledPowerMeter(lambda: pynvml.nvmlDeviceGetPowerUsage(handle) * 1e-3, f"nvml:{name}", interval_s)


# -- the estimate -------------------------------------------------------------------------------


class EstimateMeter(Meter):
    """Joules from the cost model: wall time, this process's CPU time, and the token counts
    ``usage()`` returns.

    Always available and always labelled ``estimated``, with what it charges: ``estimate:cpu-time``
    (busy CPU time), ``estimate:<class>`` (per-token defaults), ``estimate:<class>-fitted``.

    On a busy device the idle power is not all this run's: the device would draw it for the other
    processes anyway, and time spent waiting for a core is not work done. So the idle term is
    charged for the share of the cores other processes left free (read from ``/proc/stat`` at
    each reading), and a reading taken while they kept at least :data:`BUSY_CORES` busy over the
    last second or more says so: its source ends in ``+busy``.
    """

    estimated = True

    def __init__(self, model: CostModel, usage: Callable[[], Usage]) -> None:
        self.model = model
        self._usage = usage
        basis = model.basis
        self.source = "estimate:cpu-time" if basis == "cpu-time" else \
            f"estimate:{model.device_class}" + ("-fitted" if basis == "fitted" else "")
        self._cpus = allowed_cpus()
        self._lock = threading.Lock()
        self._t0 = time.monotonic()
        self._c0 = time.process_time()
        self._u0 = usage()
        self._idle_j, self._idle_until = 0.0, self._t0  # idle joules charged, up to when
        self._free_share = 1.0  # of the cores, over the last glance's interval
        self._last: tuple[float, float] | None = None
        self._glances = deque([glance(self._cpus)], maxlen=64)
        self.busy_elsewhere = 0.0  # cores other processes kept busy over the last second or more

    def _look_again(self, t: float) -> None:
        """Glance at the machine (at most every :data:`GLANCE_S`: readings come at every decode)."""
        if t - self._glances[-1].at < GLANCE_S:
            return
        now, cpus = glance(self._cpus), len(self._cpus)
        self._free_share = 1.0 - others_busy(self._glances[-1], now, cpus) / cpus
        self._glances.append(now)
        while len(self._glances) > 2 and now.at - self._glances[1].at >= BUSY_LOOK_S:
            self._glances.popleft()
        self.busy_elsewhere = others_busy(self._glances[0], now, cpus)

    def read(self) -> EnergyReading:
        with self._lock:
            t = time.monotonic()
            self._look_again(t)
            self._idle_j += self.model.idle_w * max(0.0, t - self._idle_until) * self._free_share
            self._idle_until = max(self._idle_until, t)
            work = self.model.joules(0.0, self._usage() - self._u0, time.process_time() - self._c0)
            joules = self._idle_j + work
            watts = None
            if self._last is not None and t > self._last[0]:
                watts = (joules - self._last[1]) / (t - self._last[0])
            self._last = (t, joules)
            source = self.source + (BUSY_LABEL if self.busy_elsewhere >= BUSY_CORES else "")
            return EnergyReading(joules, watts, source, True, t)
