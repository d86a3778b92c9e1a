#!/bin/bash
# Search 7 of PLAN.md, label-free: quantize_run (tools quantize would also score validation and test), then
# fidelity.py of reports/int8-fidelity-search on its 48 held-out training images. Paths are this machine's.
set -u
export BUSASSIST_DATA=/work/shared/data/busi
PY=/work/main/.venv/bin/python
P=/work/repro/runs/int8-reproduce-ema-3/prepared   # the equalised exporter graph of 98770c53 and its split
S=/work/repro/runs/int8-percentile
mkdir -p $S
cd /work/main
run() {
  name=$1; shift
  D=$S/$name
  rm -rf $D; mkdir -p $D; cp $P/emtnet.onnx $P/split.json $P/equalization.json $D/
  $PY -c "
import sys
from busassist.training.quantize import quantize_run
quantize_run('$D', '$BUSASSIST_DATA', float_ops=('Gemm',), bias_correction_images=64, $1)
" > $D.log 2>&1 || { echo "$name failed"; return; }
  $PY reports/int8-fidelity-search/fidelity.py Resources/Models/emtnet.onnx $P/split.json $BUSASSIST_DATA $D/emtnet.int8.onnx | sed "s/^{/{\"candidate\": \"$name\", /"
}
run p99.99 "reduce_range=True, percentile=99.99"
run p99.9 "reduce_range=True, percentile=99.9"
echo DONE
