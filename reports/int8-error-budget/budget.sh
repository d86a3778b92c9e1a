#!/bin/bash
# Label-free error budget of make int8's recipe on 98770c53 (no labels, no validation or test image):
# which half of the network holds the int8 masks' disagreement. With reports/int8-fidelity-search/label_free.sh.
S=/work/repro/runs/int8-budget
source "$(dirname "$0")/../int8-fidelity-search/label_free.sh"
mkdir -p $S
# 1. float32 with only the input rounded to make int8's uint8 input grid (input_grid.py)
$PY reports/int8-error-budget/input_grid.py Resources/Models/emtnet.onnx $P/emtnet.int8.onnx $S/input-grid.onnx > /dev/null
$PY reports/int8-fidelity-search/fidelity.py Resources/Models/emtnet.onnx $P/split.json $BUSASSIST_DATA $S/input-grid.onnx | sed 's/^{/{"candidate": "input-grid", /'
# 2. and 3.
label_free decoder-float "reduce_range=True" /network/segmenter/
label_free encoder-float "reduce_range=True" /network/encoder/
echo DONE
