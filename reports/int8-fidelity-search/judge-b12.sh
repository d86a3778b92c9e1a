#!/bin/bash
# Judge candidate b12 once (reports/int8-fidelity-search/PLAN.md): make int8's recipe + blocks.12 in float,
# all three bias-correction image choices, against the bundled float32 model.
set -u
export BUSASSIST_DATA=/work/shared/data/busi
P=/work/repro/runs/int8-reproduce-ema-3/prepared
B=/work/repro/runs/int8-b12
cd /work/main
run() {
  name=$1; shift
  D=$B/$name; rm -rf $D; mkdir -p $D; cp $P/emtnet.onnx $P/split.json $P/equalization.json $D/
  .venv/bin/busassist-train tools quantize $D --data $BUSASSIST_DATA --float-op Gemm --float-node /network/encoder/blocks.12/ \
    --reduce-range "$@" --against Resources/Models/emtnet.onnx > $B/$name.log 2>&1
  echo "$name rc=$?"
}
run bc-64-unused --bias-correction 64
run bc-32-all --bias-correction 32 --bias-correction-pick all
run bc-200-all --bias-correction 200 --bias-correction-pick all
echo DONE
