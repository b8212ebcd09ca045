"""Benchmark runs: strategies x questions with one resumable JSONL record each, and summaries
(tables, plots) rebuilt from the records alone."""

from edge_adapt.bench.plots import write_plots
from edge_adapt.bench.records import RunFolder, RunFolderError, stable_view
from edge_adapt.bench.runner import BenchConfig, load_problems, run_bench
from edge_adapt.bench.summary import StrategySummary, summarise, write_summary
from edge_adapt.defaults import DEFAULT_STRATEGIES, NO_PRM_STRATEGIES

__all__ = [
    "DEFAULT_STRATEGIES",
    "NO_PRM_STRATEGIES",
    "BenchConfig",
    "RunFolder",
    "RunFolderError",
    "StrategySummary",
    "load_problems",
    "run_bench",
    "stable_view",
    "summarise",
    "write_plots",
    "write_summary",
]
