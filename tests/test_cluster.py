"""`--ray` on a real local Ray instance (2 CPUs) with the shipped default models: the same
records as a local run (bench, rollouts, calibrate), a worker killed mid-run loses nothing, a
killed driver resumes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from without_modules import run_cli_without

from edge_adapt.bench import BenchConfig, RunFolder, run_bench
from edge_adapt.bench.records import stable_view
from edge_adapt.cluster import NAMESPACE, WORKER_PREFIX, ClusterSettings, FileCheck, check_files
from edge_adapt.errors import ModelLoadError
from edge_adapt.models import load_default_models
from edge_adapt.settings import ModelSettings

ray = pytest.importorskip("ray")

STRATEGIES = ("majority:n=2", "best_of_n:n=2")


@pytest.fixture(scope="module")
def ray_address() -> str:
    """One local Ray instance for the module (2 CPUs), joined by in-process runs and subprocesses."""
    ray.init(num_cpus=2, include_dashboard=False, namespace=NAMESPACE, logging_level="WARNING", log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def bench_config(limit: int) -> BenchConfig:
    models = load_default_models(None)
    return BenchConfig(ModelSettings(models.generator, models.prm, threads=1), task="default", strategies=STRATEGIES,
                       limit=limit)


def stable_records(folder: Path) -> dict[tuple[str, str], dict]:
    return {(r["question_id"], r["strategy"]): stable_view(r) for r in RunFolder(folder).records()}


@pytest.fixture(scope="module")
def local_run(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], dict]:
    out = tmp_path_factory.mktemp("local") / "run"
    run_bench(bench_config(12), out, parallel=1)  # one at a time, as each Ray worker runs: the same arithmetic
    return stable_records(out)


def test_bench_on_ray_records_what_a_local_run_records(ray_address: str, local_run: dict, tmp_path: Path) -> None:
    out = tmp_path / "ray"
    run_bench(bench_config(12), out, cluster=ClusterSettings(workers=2))
    assert stable_records(out) == local_run
    cluster = json.loads((out / "environment.json").read_text())["cluster"]
    assert len(cluster["workers"]) == 2
    assert sum(w["questions"] for w in cluster["workers"]) == 12
    assert all(w["questions_per_hour"] > 0 for w in cluster["workers"])
    assert cluster["retries"] == []
    # a rerun finds everything done and starts no worker
    run_bench(bench_config(12), out, cluster=ClusterSettings(workers=2))
    assert stable_records(out) == local_run


def test_a_worker_killed_mid_run_loses_nothing(ray_address: str, local_run: dict, tmp_path: Path) -> None:
    out = tmp_path / "ray"
    failure: list[BaseException] = []

    def run() -> None:
        try:
            run_bench(bench_config(12), out, cluster=ClusterSettings(workers=2))
        except BaseException as exc:  # handed to the test
            failure.append(exc)

    driver = threading.Thread(target=run)
    driver.start()
    records = out / "records.jsonl"
    deadline = time.monotonic() + 120
    while (not records.exists() or len(records.read_text().splitlines()) < 4) and time.monotonic() < deadline:
        time.sleep(0.05)
    ray.kill(ray.get_actor(f"{WORKER_PREFIX}0", namespace=NAMESPACE))
    driver.join(300)
    assert not failure, failure
    assert stable_records(out) == local_run
    lines = records.read_text().splitlines()
    assert len(lines) == len(local_run)  # nothing twice
    cluster = json.loads((out / "environment.json").read_text())["cluster"]
    assert [r["worker"] for r in cluster["retries"]] == [f"{WORKER_PREFIX}0"]
    assert cluster["retries"][0]["attempt"] == 1
    assert any(w["died"] for w in cluster["workers"])
    assert len(cluster["workers"]) == 3  # a replacement started


def test_a_killed_driver_resumes_where_it_stopped(ray_address: str, local_run: dict, tmp_path: Path) -> None:
    out = tmp_path / "ray"
    command = [sys.executable, "-m", "edge_adapt.cli", "bench", "-o", str(out), "--limit", "12", "--threads", "1",
               "--no-plots", "--ray", *(a for s in STRATEGIES for a in ("-s", s))]
    env = {**os.environ, "RAY_ADDRESS": ray_address}
    driver = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    records = out / "records.jsonl"
    deadline = time.monotonic() + 180
    while (not records.exists() or len(records.read_text().splitlines()) < 6) and time.monotonic() < deadline:
        time.sleep(0.05)
    driver.send_signal(signal.SIGKILL)
    driver.wait(30)
    partial = len(RunFolder(out).records())
    assert 6 <= partial < len(local_run)
    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert stable_records(out) == local_run
    assert len(records.read_text().splitlines()) == len(local_run)


def test_rollouts_on_ray_write_the_local_records(ray_address: str, tmp_path: Path) -> None:
    generator = load_default_models(None).generator
    common = [sys.executable, "-m", "edge_adapt.cli", "export", "rollouts", str(generator), "--per-level", "1", "-n", "2",
              "-m", "2", "--threads", "1"]
    env = {**os.environ, "RAY_ADDRESS": ray_address}
    local = subprocess.run([*common, "-o", str(tmp_path / "local.jsonl")], capture_output=True, text=True, timeout=300)
    remote = subprocess.run([*common, "-o", str(tmp_path / "ray.jsonl"), "--ray"], env=env, capture_output=True, text=True,
                            timeout=300)
    assert local.returncode == 0, remote.stderr[-2000:]
    assert remote.returncode == 0, remote.stderr[-2000:]

    def keyed(path: Path) -> dict:
        return {(r["question_id"], tuple(r["prefix"])): r for r in map(json.loads, path.read_text().splitlines())}

    assert keyed(tmp_path / "ray.jsonl") == keyed(tmp_path / "local.jsonl")
    assert "edge-adapt-worker-" in " ".join(remote.stdout.split())
    workers = json.loads((tmp_path / "ray.jsonl.cluster.json").read_text())["workers"]
    assert sum(w["questions"] for w in workers) == 6
    assert all(w["questions_per_hour"] for w in workers)


def test_calibrate_on_ray_fits_the_local_vote_model(ray_address: str, tmp_path: Path) -> None:
    generator = load_default_models(None).generator
    common = [sys.executable, "-m", "edge_adapt.cli", "calibrate", "-m", str(generator), "--task", "default", "--limit", "60",
              "-n", "3", "--held-out", "0.3", "--threads", "1"]
    env = {**os.environ, "RAY_ADDRESS": ray_address}
    local = subprocess.run([*common, "-o", str(tmp_path / "local.json"), "--parallel", "1"], capture_output=True, text=True,
                           timeout=300)
    remote = subprocess.run([*common, "-o", str(tmp_path / "ray.json"), "--ray"], env=env, capture_output=True, text=True,
                            timeout=300)
    assert local.returncode == 0, (local.stderr + remote.stderr)[-2000:]
    assert remote.returncode == 0, (local.stderr + remote.stderr)[-2000:]

    def fitted(path: Path) -> dict:
        return {k: v for k, v in json.loads(path.read_text()).items() if k != "provenance"}

    assert fitted(tmp_path / "ray.json") == fitted(tmp_path / "local.json")
    assert json.loads((tmp_path / "ray.json").read_text())["provenance"]["questions"] > 0


def test_a_worker_with_another_file_refuses_clearly(tmp_path: Path) -> None:
    model = tmp_path / "generator.gguf"
    model.write_bytes(b"one model")
    check = FileCheck.of(model)
    model.write_bytes(b"another model")
    with pytest.raises(ModelLoadError, match="has sha256 .* the driver's has"):
        check_files([check])
    model.unlink()
    with pytest.raises(ModelLoadError, match="does not exist there"):
        check_files([check])


def test_without_ray_the_flag_says_which_extra_to_install() -> None:
    r = run_cli_without(("ray",), "bench", "-o", "/tmp/unused-run", "--ray")
    assert r.returncode == 1
    assert "pip install 'edge-adapt[cluster]'" in " ".join(r.stderr.split())
