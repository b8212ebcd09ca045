"""Meters read from sysfs trees laid out as on real devices, the cost model and its fit, and the
batch allocator. Fixture trees stand in for hardware this machine does not have."""

from __future__ import annotations

import math
import random
import time
from pathlib import Path
from unittest.mock import patch

import pytest

from edge_adapt.budget.allocation import AnyCorrect, BatteryPacer, PluralityVote, SuccessBelief, allocate_batch, even_allocation
from edge_adapt.budget.guard import Budget
from edge_adapt.energy import DEFAULT_COST_MODELS, CostModel, CostSample, Usage, fit_cost_model, open_meter
from edge_adapt.energy.meters import CounterMeter, EstimateMeter, SampledPowerMeter
from edge_adapt.errors import BudgetError, MeterError


def _write(root: Path, rel: str, text: str) -> Path:
    """Replace a fixture file in one step: a sysfs read never sees a half-written value, and the
    pacing test rewrites power_now from a timer thread while the meter reads it."""
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return path


def orin(root: Path, mv: int = 5000, ma: int = 2000) -> Path:
    """A Jetson AGX Orin: INA3221 at hwmon1, VDD_IN on channel 1 (mV, mA), nvpmodel mode 0."""
    hw = root / "sys/class/hwmon/hwmon1"
    _write(hw, "name", "ina3221\n")
    for i, label in enumerate(["VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC"], start=1):
        _write(hw, f"in{i}_label", label + "\n")
        _write(hw, f"in{i}_input", f"{mv}\n")
        _write(hw, f"curr{i}_input", f"{ma}\n")
    _write(root, "var/lib/nvpmodel/status", "pmode:0002\n")
    return root / "sys"


def rapl_laptop(root: Path, start: int = 1_000_000, wrap: int = 10_000_000) -> Path:
    zone = root / "class/powercap/intel-rapl:0"
    _write(zone, "name", "package-0\n")
    _write(zone, "energy_uj", f"{start}\n")
    _write(zone, "max_energy_range_uj", f"{wrap - 1}\n")
    return zone


def battery_laptop(root: Path, status: str = "Discharging") -> Path:
    bat = root / "class/power_supply/BAT0"
    _write(bat, "type", "Battery\n")
    _write(bat, "status", f"{status}\n")
    _write(bat, "current_now", "1000000\n")  # 1 A
    _write(bat, "voltage_now", "12000000\n")  # 12 V
    return bat


def test_jetson_rail_is_integrated_over_time_with_power_mode(tmp_path: Path) -> None:
    sysfs = orin(tmp_path, mv=5000, ma=2000)  # 10 W on VDD_IN
    from edge_adapt.energy import detect_meters

    jetson = {m.name: m for m in detect_meters(sysfs, nvml=False)}["jetson"]
    assert jetson.available
    assert "power mode 2" in jetson.detail
    with open_meter(sysfs_root=sysfs, nvml=False) as meter:
        first = meter.read()
        time.sleep(0.3)
        second = meter.read()
    assert second.source == "jetson:VDD_IN"
    assert not second.estimated
    assert second.watts == pytest.approx(10.0)
    assert second.joules - first.joules == pytest.approx(10.0 * (second.timestamp - first.timestamp), rel=1e-6)


def test_rapl_counter_wraps_around(tmp_path: Path) -> None:
    zone = rapl_laptop(tmp_path, start=9_000_000, wrap=10_000_000)
    meter = open_meter(sysfs_root=tmp_path, nvml=False)
    assert meter.source == "rapl:package-0"
    _write(zone, "energy_uj", "9500000\n")
    assert meter.read().joules == pytest.approx(0.5)
    _write(zone, "energy_uj", "500000\n")  # wrapped: 9.5 -> 10.0 -> 0.5 J on the counter
    assert meter.read().joules == pytest.approx(1.5)


def test_a_counter_read_after_several_wraps_adds_the_wraps_its_last_power_implies() -> None:
    # a 10 J counter read at steady 4 W: a read after 6 s has seen two wraps plus 4 J
    clock = {"t": 0.0, "uj": 0.0}
    meter = CounterMeter(lambda: clock["uj"], 1e-6, 10_000_000, "test")
    with patch("edge_adapt.energy.meters.time.monotonic", lambda: clock["t"]):
        meter._last_t = meter._t0 = 0.0
        clock.update(t=1.0, uj=4_000_000.0)
        assert meter.read().joules == pytest.approx(4.0)  # 4 W on average
        clock.update(t=7.0, uj=8_000_000.0)  # 24 J later: 28 J on a 10 J counter shows 8
        assert meter.read().joules == pytest.approx(28.0)


def test_a_sampled_meter_whose_reader_fails_says_so_in_the_callers_thread() -> None:
    calls = {"n": 0}

    def watts() -> float:
        calls["n"] += 1
        if calls["n"] > 2:
            raise RuntimeError("NVML_ERROR_GPU_IS_LOST")
        return 5.0

    meter = SampledPowerMeter(watts, "nvml:test", interval_s=0.01)
    try:
        time.sleep(0.1)
        with pytest.raises(MeterError, match="nvml:test: reading the power failed.*GPU_IS_LOST"):
            meter.read()
    finally:
        meter.close()
    nan = SampledPowerMeter(lambda: 5.0 if calls["n"] < 10 else math.nan, "nan", interval_s=1.0)
    calls["n"] = 10
    with pytest.raises(MeterError, match="not a finite number"):
        nan.read()
    nan.close()


def test_a_battery_that_starts_charging_mid_run_stops_being_a_meter(tmp_path: Path) -> None:
    bat = battery_laptop(tmp_path)
    with open_meter("battery", sysfs_root=tmp_path, nvml=False) as meter:
        assert meter.read().watts == pytest.approx(12.0)
        _write(bat, "status", "Charging\n")
        with pytest.raises(MeterError, match="charging, not discharging"):
            meter.read()


def test_rapl_counter_that_disappears_is_a_clear_error(tmp_path: Path) -> None:
    zone = rapl_laptop(tmp_path)
    meter = open_meter("rapl", sysfs_root=tmp_path, nvml=False)
    (zone / "energy_uj").unlink()
    with pytest.raises(MeterError, match="energy_uj"):
        meter.read()


def test_battery_power_from_current_and_voltage_only_while_discharging(tmp_path: Path) -> None:
    bat = battery_laptop(tmp_path, status="Charging")
    with pytest.raises(MeterError, match="charging"):
        open_meter("battery", sysfs_root=tmp_path, nvml=False)
    _write(bat, "status", "Discharging\n")
    with open_meter(sysfs_root=tmp_path, nvml=False) as meter:
        reading = meter.read()
    assert reading.source == "battery:BAT0"
    assert reading.watts == pytest.approx(12.0)


def test_unreadable_rail_reports_why(tmp_path: Path) -> None:
    sysfs = orin(tmp_path)
    channel = sysfs / "class/hwmon/hwmon1/curr1_input"
    channel.unlink()
    channel.mkdir()  # unreadable as a file, even for root
    with pytest.raises(MeterError, match="curr1_input"):
        open_meter("jetson", sysfs_root=sysfs, nvml=False)


def test_estimate_is_labelled_and_charges_time_and_tokens(tmp_path: Path) -> None:
    work = {"u": Usage()}
    model = CostModel("cpu", idle_w=10.0, j_per_prompt_token=0.1, j_per_generated_token=1.0, j_per_prm_token=0.01)
    meter = open_meter(sysfs_root=tmp_path, nvml=False, usage=lambda: work["u"], cost_model=model)
    assert isinstance(meter, EstimateMeter)
    assert meter.source == "estimate:cpu"
    work["u"] = Usage(prompt_tokens=10, generated_tokens=5, prm_tokens=100)
    reading = meter.read()
    assert reading.estimated
    tokens_j = 10 * 0.1 + 5 * 1.0 + 100 * 0.01
    assert tokens_j <= reading.joules < tokens_j + 10.0 * 1.0  # plus idle power for the elapsed time
    with pytest.raises(MeterError, match="unknown meter"):
        open_meter("wattmeter", sysfs_root=tmp_path)


def test_cost_model_fit_recovers_coefficients_and_round_trips(tmp_path: Path) -> None:
    truth = CostModel("cpu", idle_w=7.0, j_per_prompt_token=0.003, j_per_generated_token=0.02, j_per_prm_token=0.0)
    samples = []
    for i in range(12):
        u = Usage(prompt_tokens=50 + 30 * i, generated_tokens=200 + 97 * (i % 5) + 11 * i, prm_tokens=1000 + 300 * (i % 3))
        wall = 1.0 + 0.37 * i + 0.1 * (i % 4)
        samples.append(CostSample(wall, u, truth.joules(wall, u)))
    fitted = fit_cost_model(samples, "cpu")
    assert fitted.fitted
    assert fitted.idle_w == pytest.approx(7.0, rel=1e-6)
    assert fitted.j_per_generated_token == pytest.approx(0.02, rel=1e-6)
    assert fitted.j_per_prm_token >= 0
    fitted.save(tmp_path / "cost.json")
    assert CostModel.load(tmp_path / "cost.json") == fitted
    with pytest.raises(MeterError, match="at least 4"):
        fit_cost_model(samples[:2], "cpu")
    with pytest.raises(MeterError, match="energy fit"):
        CostModel.load(tmp_path / "missing.json")
    assert set(DEFAULT_COST_MODELS) == {"cpu", "jetson", "gpu"}


def test_budget_rejects_nonsense() -> None:
    with pytest.raises(BudgetError, match="positive"):
        Budget(energy_j=0)
    with pytest.raises(BudgetError, match="safety"):
        Budget(safety=0.5)
    for bad in (math.nan, math.inf, -1.0):
        with pytest.raises(BudgetError, match="finite"):
            Budget(energy_j=bad)
    with pytest.raises(MeterError, match="j_per_prm_token"):
        CostModel("cpu", 6.0, 0.002, 0.01, math.nan)
    with pytest.raises(MeterError, match="idle_w"):
        CostModel("cpu", -1.0, 0.002, 0.01, 0.001)


def test_batch_allocation_buys_the_best_gain_per_joule() -> None:
    # easy (p=0.9), medium (0.5), hopeless (0.0): 6 samples' worth of energy
    alloc = allocate_batch([0.9, 0.5, 0.0], 1.0, 6.0)
    # gains: easy 0.9, 0.09, ...; medium 0.5, 0.25, 0.125, 0.0625, 0.031...
    # best six: 0.9, 0.5, 0.25, 0.125, 0.09, 0.0625 -> easy 2, medium 4, hopeless 0
    assert alloc.samples == (2, 4, 0)
    assert alloc.expected_correct == pytest.approx((1 - 0.1**2) + (1 - 0.5**4))
    even = even_allocation(3, 1.0, 6.0)
    assert even.samples == (2, 2, 2)
    expected_even = (1 - 0.1**2) + (1 - 0.5**2)
    assert alloc.expected_correct > expected_even
    # a question whose next sample no longer fits does not block cheaper ones
    # (question 0's first sample, 4 J, stops fitting after two cheap ones; question 1 takes the rest)
    assert allocate_batch([0.5, 0.5], [4.0, 1.0], 4.5).samples == (0, 4)
    with pytest.raises(BudgetError):
        allocate_batch([0.5], [1.0, 2.0], 3.0)


def test_power_cap_paces_until_the_window_average_is_under_it(tmp_path: Path) -> None:
    import threading

    from edge_adapt.budget.decisions import PowerPaced
    from edge_adapt.budget.policy import EnergyPolicy

    bat = battery_laptop(tmp_path)
    _write(bat, "power_now", "12000000\n")  # 12 W while busy
    with open_meter("battery", sysfs_root=tmp_path, nvml=False) as meter:
        policy = EnergyPolicy(meter, Budget(power_w=5.0, power_window_s=0.3), Usage)
        guard = policy.start_question()
        time.sleep(0.35)
        threading.Timer(0.2, lambda: _write(bat, "power_now", "1000000\n")).start()  # the device idles: 1 W
        grant = guard.grant("sample", 4)
        assert grant.units == 4  # after waiting for the average to fall under 5 W
        assert policy.window_power() <= 5.0
        (paced,) = grant.decisions
        assert isinstance(paced, PowerPaced)
        assert paced.waited_s >= 0.2
        assert paced.cap_w == 5.0
        assert paced.gave_up is None
        assert "gave_up" not in paced.as_record()["detail"]
        # a cap below what the device draws idle cannot be met by waiting: it says so instead of stalling
        _write(bat, "power_now", "9000000\n")
        time.sleep(0.35)
        grant = guard.grant("sample", 2)
        assert grant.units == 2
        assert grant.decisions[-1].detail["gave_up"] == "idle power above the cap"


def test_a_fixed_cost_per_question_keeps_the_allocator_from_opening_questions_worth_little() -> None:
    # without the fixed cost both questions look worth a sample; with 3 J to open a question,
    # the unlikely one is not opened and its budget buys the likely one's samples
    assert allocate_batch([0.6, 0.05], 1.0, 6.0).samples[1] > 0
    plan = allocate_batch([0.6, 0.05], 1.0, 6.0, first_sample_joules=3.0)
    assert plan.samples == (3, 0)
    assert plan.joules_planned == 6.0
    assert even_allocation(2, 1.0, 8.0, first_sample_joules=2.0).samples == (2, 2)


def _vote_accuracy_by_enumeration(p: float, n: int) -> float:
    """The real ``majority_vote`` over every right/wrong pattern of n samples (wrong answers all different)."""
    from itertools import product

    from edge_adapt.generator import StepEnd
    from edge_adapt.search.types import Candidate
    from edge_adapt.search.voting import majority_vote

    total = 0.0
    for pattern in product((True, False), repeat=n):
        answers = ["42" if right else f"wrong{i}" for i, right in enumerate(pattern)]
        candidates = [Candidate(steps=(), answer=a, end=StepEnd.ANSWER, final=None) for a in answers]
        picked = majority_vote(candidates, lambda a, b: a == b)
        weight = math.prod(p if right else 1 - p for right in pattern)
        total += weight * (picked is not None and answers[picked] == "42")
    return total


@pytest.mark.parametrize("p", [0.1, 0.5, 0.83])
def test_plurality_vote_model_matches_the_real_majority_vote(p: float) -> None:
    model = PluralityVote()
    assert model.accuracy(p, 0) == 0.0
    for n in range(1, 8):
        assert model.accuracy(p, n) == pytest.approx(_vote_accuracy_by_enumeration(p, n), abs=1e-12)


def test_vote_and_pass_at_n_accuracy_by_hand() -> None:
    # at p = 0.5 a second sample only ties (0.5); three give 0.5 + 3/8 * 1/3 = 0.625
    assert [round(PluralityVote().accuracy(0.5, n), 4) for n in (1, 2, 3, 4)] == [0.5, 0.5, 0.625, 0.75]
    assert AnyCorrect().accuracy(0.5, 3) == 0.875


def test_batch_allocation_plans_for_the_selector_that_picks_the_answer() -> None:
    # two samples' worth for a likely (0.5) and an unlikely (0.2) question. pass@n buys the likely
    # question's second sample (gain 0.25 > 0.2); under a vote that sample changes nothing, so the
    # vote-aware plan opens the unlikely question instead
    assert allocate_batch([0.5, 0.2], 1.0, 2.0).samples == (2, 0)
    plan = allocate_batch([0.5, 0.2], 1.0, 2.0, selection=PluralityVote())
    assert plan.samples == (1, 1)
    assert plan.expected_correct == pytest.approx(0.7)
    assert plan.selection == "majority vote"
    # with three samples' worth for one question the vote-aware plan buys the bundle of two that
    # makes the third pay (one at a time it would stop after the first: its second gains nothing)
    assert allocate_batch([0.5], 1.0, 3.0, selection=PluralityVote()).samples == (3,)
    # and spends an even split's worth better than the even split does, for a vote
    success = [0.95, 0.9, 0.6, 0.5, 0.5, 0.3, 0.1, 0.05]
    even = even_allocation(len(success), 1.0, 16.0)
    vote = PluralityVote()
    even_expected = sum(vote.accuracy(p, n) for p, n in zip(success, even.samples, strict=True))
    planned = allocate_batch(success, 1.0, 16.0, selection=vote)
    assert sum(planned.samples) == 16
    assert planned.expected_correct > even_expected + 0.3
    with pytest.raises(BudgetError, match="lookahead"):
        allocate_batch([0.5], 1.0, 3.0, lookahead=0)


def test_success_belief_from_quantiles_weighs_each_by_the_mass_nearest_it() -> None:
    belief = SuccessBelief.from_quantiles((0.1, 0.5, 0.9), (0.0, 0.05, 0.4))
    assert belief.weights == pytest.approx((0.3, 0.4, 0.3))  # Swanson's rule
    assert belief.mean == pytest.approx(0.14)
    assert SuccessBelief.from_quantiles((0.25, 0.75), (0.2, 0.6)).weights == pytest.approx((0.5, 0.5))
    assert SuccessBelief.point(1.3).values == (1.0,)
    with pytest.raises(BudgetError, match="increasing"):
        SuccessBelief.from_quantiles((0.9, 0.1), (0.1, 0.2))
    with pytest.raises(BudgetError, match="sum to 1"):
        SuccessBelief((0.1, 0.2), (0.5, 0.6))


def test_the_allocator_plans_with_what_the_prm_does_not_know() -> None:
    # a sure 0.5 and a question whose median is 0.2 but could well be 0.7 (expected p 0.29):
    # with medians the sure question's second sample (0.25) beats opening the other (0.2);
    # with the quantiles opening it is worth more
    uncertain = SuccessBelief.from_quantiles((0.1, 0.5, 0.9), (0.0, 0.2, 0.7))
    assert allocate_batch([0.5, 0.2], 1.0, 2.0).samples == (2, 0)
    plan = allocate_batch([0.5, uncertain], 1.0, 2.0)
    assert plan.samples == (1, 1)
    assert plan.expected_correct == pytest.approx(0.5 + uncertain.mean)
    # a vote's third sample pays less on "0.7, give or take 0.3" than on a sure 0.7
    vote, sure = PluralityVote(), SuccessBelief.point(0.7)
    spread = SuccessBelief.from_quantiles((0.1, 0.5, 0.9), (0.4, 0.7, 1.0))
    assert spread.mean == pytest.approx(0.7)
    gain = {b: b.accuracy(vote, 3) - b.accuracy(vote, 1) for b in (sure, spread)}
    assert gain[sure] == pytest.approx(0.147)
    assert gain[spread] == pytest.approx(0.3 * (0.496 - 0.4) + 0.4 * 0.147)


def test_an_even_split_of_exactly_k_samples_worth_gives_k_samples() -> None:
    # costs whose sum does not divide back exactly in floating point (0.9999999999999999 of a sample)
    rng = random.Random(1)
    costs = [rng.uniform(0.2, 1.3) for _ in range(500)]
    for k in (1, 2, 4):
        total = 500 * 0.48 + k * sum(costs)
        assert even_allocation(500, sum(costs) / 500, total, first_sample_joules=0.48).samples == (k,) * 500


def test_battery_pacer_raises_the_price_when_ahead_of_pace_and_lowers_it_when_behind() -> None:
    pacer = BatteryPacer(100.0, 10, price=8.0, max_step=1.5)
    assert pacer.record(15.0) == pytest.approx(8.0 * 1.5)  # 15 J against a pace of 10: dearer, by at most 1.5x
    assert pacer.record(5.0) == pytest.approx(12.0)  # 20 J after two: on pace, unchanged
    assert pacer.record(0.0) == pytest.approx(12.0 / (30 / 20))  # skipped: 20 J against 30, cheaper
    assert pacer.left == pytest.approx(80.0)
    assert pacer.done == 3
    floor = BatteryPacer(100.0, 10, price=0.3, floor=0.25)
    assert floor.record(0.0) == 0.25  # never below the floor
    with pytest.raises(BudgetError, match="positive joules"):
        BatteryPacer(0.0, 10)
    with pytest.raises(BudgetError, match="max_step > 1"):
        BatteryPacer(10.0, 10, max_step=1.0)


def test_the_cpu_estimate_charges_this_process_busy_time(tmp_path: Path) -> None:
    """Without a meter the CPU estimate scales with the work the device really did (any model):
    idle watts for the wall time plus a busy core's watts for this process's CPU time."""
    meter = open_meter("estimate", sysfs_root=tmp_path, nvml=False)
    assert meter.source == "estimate:cpu-time"
    assert DEFAULT_COST_MODELS["cpu"].basis == "cpu-time"
    start = time.process_time()
    while time.process_time() - start < 0.2:  # one busy core for 0.2 s of CPU time
        pass
    reading = meter.read()
    model = DEFAULT_COST_MODELS["cpu"]
    # the busy core's share at least (the wall time may trail the CPU time of a many-threaded process)
    assert reading.estimated
    assert reading.joules >= model.w_per_busy_core * 0.2 + model.idle_w * 0.1
