#!/bin/bash
# PLAN.md: six models of the EMA study, label-free. Paths are this machine's. The input grid is taken from
# make int8's file of 98770c53 (scale 2/255, zero point 128: the grid of the normalised image, the same for
# every model).
set -u
export BUSASSIST_DATA=/work/shared/data/busi
PY=/work/main/.venv/bin/python
STUDY=/work/repro/runs/ema-agreement
GRID=/work/repro/runs/int8-reproduce-ema-3/prepared/emtnet.int8.onnx
S=/work/repro/runs/int8-ema-steadiness
mkdir -p $S
cd /work/main
for keep in best ema; do for seed in 3 4 5; do
  name=keep-$keep-seed-$seed; D=$S/$name
  rm -rf $D; mkdir -p $D; cp $STUDY/keep-$keep/seed-$seed/emtnet.onnx $STUDY/keep-$keep/seed-$seed/split.json $D/
  $PY -c "import sys; from pathlib import Path; from busassist.training.export import seal_model; seal_model(Path(sys.argv[1]))" $D/emtnet.onnx
  $PY reports/int8-error-budget/input_grid.py $D/emtnet.onnx $GRID $D/input-grid.onnx > /dev/null
  $PY reports/int8-fidelity-search/fidelity.py $D/emtnet.onnx $D/split.json $BUSASSIST_DATA $D/input-grid.onnx | sed "s/^{/{\"model\": \"$name\", \"measure\": \"input rounding\", /"
  $PY -c "
from busassist.training.quantize import quantize_run
quantize_run('$D', '$BUSASSIST_DATA', float_ops=('Gemm',), reduce_range=True, bias_correction_images=64)
" > $D.quantize.log 2>&1 || { echo "$name quantize failed"; continue; }
  $PY reports/int8-fidelity-search/fidelity.py $D/emtnet.onnx $D/split.json $BUSASSIST_DATA $D/emtnet.int8.onnx | sed "s/^{/{\"model\": \"$name\", \"measure\": \"int8\", /"
done; done
# For scale (added after the six, 05:28 UTC): the previous shipped model, 804d8d00 (best epoch), input rounding only.
O=$S/previous-804d8d00; mkdir -p $O
git show 5f8566f~1:Resources/Models/emtnet.onnx > $O/emtnet.onnx; git show 5f8566f~1:Resources/Models/emtnet.onnx.sha256 > $O/emtnet.onnx.sha256
$PY reports/int8-error-budget/input_grid.py $O/emtnet.onnx $GRID $O/input-grid.onnx > /dev/null
$PY reports/int8-fidelity-search/fidelity.py $O/emtnet.onnx $STUDY/keep-ema/seed-3/split.json $BUSASSIST_DATA $O/input-grid.onnx | sed 's/^{/{"model": "previous-804d8d00", "measure": "input rounding", /'
echo DONE
