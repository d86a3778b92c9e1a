#!/bin/bash
# The probe of PLAN.md: for lambda 0 (control) and 5 (steep), fine-tune, then the label-free measures against the
# model's own float32 form, and (information only) validation AUC / lesion Dice. No test image. Paths: this machine's.
set -u
export BUSASSIST_DATA=/work/shared/data/busi
PY=/work/main/.venv/bin/python
G=/work/repro/runs/int8-reproduce-ema-3/exporter-graph.onnx
GRID=/work/repro/runs/int8-reproduce-ema-3/prepared/emtnet.int8.onnx
S=/work/repro/runs/int8-steep-border
mkdir -p $S
cd /work/main
for lambda in 0 5; do
  D=$S/lambda-$lambda; rm -rf $D
  $PY reports/int8-steep-border/finetune.py $G $D $BUSASSIST_DATA $lambda > $D.log 2>&1 || { echo "lambda $lambda failed"; continue; }
  $PY -c "
from busassist.training.quantize import quantize_run
quantize_run('$D/eq', '$BUSASSIST_DATA', float_ops=('Gemm',), reduce_range=True, bias_correction_images=64)
" >> $D.log 2>&1 || { echo "lambda $lambda quantize failed"; continue; }
  $PY reports/int8-fidelity-search/fidelity.py $D/emtnet.onnx $D/split.json $BUSASSIST_DATA $D/eq/emtnet.int8.onnx | sed "s/^{/{\"lambda\": $lambda, \"measure\": \"int8 against its own float32\", /"
  $PY reports/int8-error-budget/input_grid.py $D/emtnet.onnx $GRID $D/input-grid.onnx > /dev/null
  $PY reports/int8-fidelity-search/fidelity.py $D/emtnet.onnx $D/split.json $BUSASSIST_DATA $D/input-grid.onnx | sed "s/^{/{\"lambda\": $lambda, \"measure\": \"input rounding\", /"
  $PY -c "
import json, sys
from pathlib import Path
import numpy as np
from busassist.core.inference import Analyzer
from busassist.training.busi import discover
from busassist.training.evaluate import analyse_cases
from busassist.training.metrics import auc
from busassist.training.reference import REFERENCE_RUNTIME
cases = {c.key: c for c in discover(Path('$BUSASSIST_DATA'))}
keys = json.loads(Path('$D/split.json').read_text())['val']
for name, path in (('fine-tuned', '$D/emtnet.onnx'), ('shipped', 'Resources/Models/emtnet.onnx')):
    r = analyse_cases(Analyzer(Path(path), backend=REFERENCE_RUNTIME), [cases[k] for k in keys])
    lab = r['labels'] >= 0
    print(json.dumps({'lambda': $lambda, 'measure': 'validation (information only)', 'model': name,
        'auc': round(float(auc(r['labels'][lab], r['probabilities'][lab])), 4), 'lesion_dice': round(float(r['dice'][lab].mean()), 4)}))
"
done
echo DONE
