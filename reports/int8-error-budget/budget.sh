#!/bin/bash
# Label-free error budget of make int8's recipe on 98770c53 (no labels, no validation or test image):
# which half of the network holds the int8 masks' disagreement. Paths are this machine's.
set -u
export BUSASSIST_DATA=/work/shared/data/busi
PY=/work/main/.venv/bin/python
P=/work/repro/runs/int8-reproduce-ema-3/prepared
S=/work/repro/runs/int8-budget
mkdir -p $S
cd /work/main
run() {
  name=$1; shift
  D=$S/$name
  rm -rf $D; mkdir -p $D; cp $P/emtnet.onnx $P/split.json $P/equalization.json $D/
  $PY -c "
import sys
from busassist.training.quantize import quantize_run
quantize_run('$D', '$BUSASSIST_DATA', float_ops=('Gemm',), reduce_range=True, bias_correction_images=64, float_nodes=tuple(sys.argv[1:]))
" "$@" > $D.log 2>&1 || { echo "$name failed"; return; }
  $PY reports/int8-fidelity-search/fidelity.py Resources/Models/emtnet.onnx $P/split.json $BUSASSIST_DATA $D/emtnet.int8.onnx | sed "s/^{/{\"candidate\": \"$name\", /"
}
# 1. float32 with only the input rounded to make int8's uint8 input grid (input_grid.py)
$PY reports/int8-error-budget/input_grid.py Resources/Models/emtnet.onnx $P/emtnet.int8.onnx $S/input-grid.onnx > /dev/null
$PY reports/int8-fidelity-search/fidelity.py Resources/Models/emtnet.onnx $P/split.json $BUSASSIST_DATA $S/input-grid.onnx | sed 's/^{/{"candidate": "input-grid", /'
# 2. and 3.
run decoder-float /network/segmenter/
run encoder-float /network/encoder/
echo DONE
