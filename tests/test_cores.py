"""Threads that fit the free cores: the affinity mask, a cgroup's CPU quota (faked as the files
the kernel lays out), and other processes' load, measured for real."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edge_adapt.cores import CoreLoad, LoadWatch, cgroup_quota, choose_threads, fitting_threads, look


def fake_cgroup(tmp_path: Path, proc_line: str, files: dict[str, str]) -> tuple[Path, Path]:
    root, proc = tmp_path / "cgroup", tmp_path / "proc"
    (proc / "self").mkdir(parents=True)
    (proc / "self" / "cgroup").write_text(proc_line + "\n")
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root, proc


def test_a_cgroup_v2_quota_is_read_at_the_process_own_cgroup(tmp_path: Path) -> None:
    root, proc = fake_cgroup(tmp_path, "0::/system.slice/edge.service",
                             {"system.slice/edge.service/cpu.max": "150000 100000\n", "cpu.max": "max 100000\n"})
    assert cgroup_quota(root, proc) == pytest.approx(1.5)
    (root / "system.slice/edge.service/cpu.max").write_text("max 100000\n")
    assert cgroup_quota(root, proc) is None  # no quota anywhere


def test_a_cgroup_v1_quota_is_read_and_no_quota_is_none(tmp_path: Path) -> None:
    root, proc = fake_cgroup(tmp_path, "4:cpu,cpuacct:/docker/abc",
                             {"cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "50000\n",
                              "cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000\n"})
    assert cgroup_quota(root, proc) == pytest.approx(0.5)
    (root / "cpu,cpuacct/docker/abc/cpu.cfs_quota_us").write_text("-1\n")
    assert cgroup_quota(root, proc) is None


@pytest.mark.parametrize(("load", "threads"), [
    (CoreLoad(cpus=8, quota=None, others_busy=0.0), 8),
    (CoreLoad(cpus=8, quota=2.5, others_busy=0.0), 2),  # a quota of 2.5 cores: two whole ones
    (CoreLoad(cpus=8, quota=0.5, others_busy=0.0), 1),  # never fewer than one
    (CoreLoad(cpus=2, quota=None, others_busy=2.0), 1),  # another process on every core
    (CoreLoad(cpus=4, quota=None, others_busy=1.1), 3),  # a little load does not cost a core
    (CoreLoad(cpus=4, quota=None, others_busy=1.5), 2),
])
def test_the_threads_are_the_whole_free_cores(load: CoreLoad, threads: int) -> None:
    assert fitting_threads(load) == threads
    choice = choose_threads(None, measure=lambda: load)
    assert choice.threads == threads
    assert f"{load.cpus} CPUs allowed" in choice.why
    assert choice.as_record()["others_busy"] == round(load.others_busy, 2)
    assert choose_threads(3, measure=lambda: load).as_record() == {"threads": 3, "why": "as told (--threads)"}


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="affinity masks are Linux's")
def test_an_affinity_mask_of_one_cpu_gives_one_thread() -> None:
    code = ("import json, os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); "
            "from edge_adapt.cores import choose_threads, look; "
            "c = choose_threads(None, measure=lambda: look(0.05)); print(json.dumps(c.as_record()))")
    record = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert record["threads"] == 1
    assert record["cpus"] == 1


def _spin(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


@pytest.mark.skipif(not Path("/proc/stat").exists(), reason="the load is read from /proc/stat")
def test_other_processes_load_is_seen_and_leaves_fewer_threads() -> None:
    cpus = len(os.sched_getaffinity(0))
    spinners = [multiprocessing.get_context("spawn").Process(target=_spin, args=(3.0,)) for _ in range(min(cpus, 2))]
    for p in spinners:
        p.start()
    try:
        time.sleep(0.8)  # the spawned interpreters are up and spinning
        load = look(0.5)
    finally:
        for p in spinners:
            p.join()
    # each spinner keeps most of a core busy (a shared CI machine may give it less)
    assert load.others_busy >= 0.6 * len(spinners)
    assert fitting_threads(load) <= max(1, cpus - 1)
    assert look(0.3).others_busy < load.others_busy  # and the load is gone once they stop


def test_the_load_watch_hands_over_a_new_thread_count_when_the_load_changes() -> None:
    loads = iter([CoreLoad(4, None, 0.0), CoreLoad(4, None, 3.0), CoreLoad(4, None, 3.0)])
    applied: list[int] = []
    watch = LoadWatch(applied.append, every_s=0.01, look_s=0.0, measure=lambda s: next(loads, CoreLoad(4, None, 3.0)))
    watch.start(current=4)
    deadline = time.monotonic() + 5
    while not applied and time.monotonic() < deadline:
        time.sleep(0.01)
    watch.close()
    assert applied == [1]  # 4 -> 4 is no change; 3 busy cores of 4 leave one
