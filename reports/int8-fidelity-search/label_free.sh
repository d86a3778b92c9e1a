# Sourced by the label-free int8 searches (search.sh here, reports/int8-depthwise/step1.sh,
# reports/int8-error-budget/budget.sh and search7.sh). Paths are those of the machine they ran on (2026-12-07).
# label_free NAME KWARGS [FLOAT_NODE ...]: quantize_run (the function behind tools quantize, which would also score
# validation and test) on a copy of the equalised exporter graph of 98770c53 in $S/NAME, with make int8's settings
# (dense layers in float, 64 unused bias-correction images) plus KWARGS (Python keyword arguments) and the float
# nodes, then fidelity.py against the bundled float32 model: one JSON line, tagged with NAME.
set -u
export BUSASSIST_DATA=/work/shared/data/busi
PY=/work/main/.venv/bin/python
P=/work/repro/runs/int8-reproduce-ema-3/prepared
cd /work/main
label_free() {
  name=$1; kwargs=$2; shift 2
  D=$S/$name
  rm -rf $D; mkdir -p $D; cp $P/emtnet.onnx $P/split.json $P/equalization.json $D/
  $PY -c "
import sys
from busassist.training.quantize import quantize_run
quantize_run('$D', '$BUSASSIST_DATA', float_ops=('Gemm',), bias_correction_images=64, float_nodes=tuple(sys.argv[1:]), $kwargs)
" "$@" > $D.log 2>&1 || { echo "$name failed"; return; }
  $PY reports/int8-fidelity-search/fidelity.py Resources/Models/emtnet.onnx $P/split.json $BUSASSIST_DATA $D/emtnet.int8.onnx | sed "s/^{/{\"candidate\": \"$name\", /"
}
