#!/bin/bash
# The steps of PLAN.md, one at a time: steps.sh 1|2|3. Paths are those of the machine it ran on (2026-12-07):
# the training ran in the clone /work/repro (runs/relu6-ema-3), this checkout holds the scripts.
set -u
export BUSASSIST_DATA=/work/shared/data/busi
R=/work/repro
RUN=$R/runs/relu6-ema-3
I=$R/runs/int8-relu6-ema-3
TRAIN=$R/.venv/bin/busassist-train
PY=/work/main/.venv/bin/python
cd /work/main
case $1 in
1)  # label-free: the run's own float32 model quantised (no equalisation: not valid across ReLU6), scored against it
  mkdir -p $I/prepared
  cp $RUN/emtnet.onnx $RUN/emtnet.onnx.sha256 $RUN/split.json $I/prepared/
  $PY -c "
from busassist.training.quantize import quantize_run
quantize_run('$I/prepared', '$BUSASSIST_DATA', float_ops=('Gemm',), reduce_range=True, bias_correction_images=64)
" > $I/step1.log 2>&1 || { echo "quantize failed"; exit 1; }
  $PY reports/int8-fidelity-search/fidelity.py $RUN/emtnet.onnx $RUN/split.json $BUSASSIST_DATA $I/prepared/emtnet.int8.onnx \
    | sed 's/^{/{"step": 1, "measure": "int8 against its own float32", /'
  $PY reports/int8-error-budget/input_grid.py $RUN/emtnet.onnx $I/prepared/emtnet.int8.onnx $I/input-grid.onnx > /dev/null
  $PY reports/int8-fidelity-search/fidelity.py $RUN/emtnet.onnx $RUN/split.json $BUSASSIST_DATA $I/input-grid.onnx \
    | sed 's/^{/{"step": 1, "measure": "input rounding", /'
  ;;
2)  # the replacement rule against the shipped card
  $TRAIN compare $RUN --replace; echo "exit $?"
  ;;
3)  # the int8 rule, once, with the step-1 setting
  $TRAIN tools quantize $I/prepared --data $BUSASSIST_DATA --float-op Gemm --reduce-range --bias-correction 64 \
    --against $RUN/emtnet.onnx --check; echo "exit $?"
  ;;
esac
