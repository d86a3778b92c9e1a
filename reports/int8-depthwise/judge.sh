#!/bin/bash
# Step 3 of PLAN.md, judged once: make int8's recipe with --full-range-depthwise, all three bias-correction
# image choices, against the bundled float32 model. Paths are this machine's.
set -u
export BUSASSIST_DATA=/work/shared/data/busi
P=/work/repro/runs/int8-reproduce-ema-3/prepared
B=/work/repro/runs/int8-depthwise-judge
mkdir -p $B
cd /work/main
run() {
  name=$1; shift
  D=$B/$name; rm -rf $D; mkdir -p $D; cp $P/emtnet.onnx $P/split.json $P/equalization.json $D/
  .venv/bin/busassist-train tools quantize $D --data $BUSASSIST_DATA --float-op Gemm --reduce-range --full-range-depthwise \
    "$@" --against Resources/Models/emtnet.onnx > $B/$name.log 2>&1
  echo "$name rc=$?"
}
run bc-64-unused --bias-correction 64
run bc-32-all --bias-correction 32 --bias-correction-pick all
run bc-200-all --bias-correction 200 --bias-correction-pick all
echo DONE
