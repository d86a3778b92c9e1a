#!/usr/bin/env bash
# PLAN.md of this folder, as run on 2026-12-07 (this machine's paths; F0 from reports/int8-faithful-qat/steps.sh 0).
set -euo pipefail
export BUSASSIST_DATA=/work/shared/data/busi
PY=/work/main/.venv/bin/python
GRAPH=/work/repro/runs/int8-reproduce-ema-3/exporter-graph.onnx
F=/work/repro/runs/int8-faithful
FAITHFUL=reports/int8-faithful-qat/faithful.py
cd /work/main
$PY reports/int8-faithful-qat-mask/loss_terms.py $GRAPH $F/f0/emtnet.int8.onnx $F/f0/split.json $BUSASSIST_DATA \
  > reports/int8-faithful-qat-mask/loss_terms.jsonl
$PY $FAITHFUL tune $GRAPH $F/f0/emtnet.int8.onnx $F/f0/split.json $BUSASSIST_DATA $F/f1d 3 yes sign-probability
$PY $FAITHFUL quantize $F/f1d $F/f0/emtnet.int8.onnx $BUSASSIST_DATA
$PY $FAITHFUL compare $GRAPH $F/f0/emtnet.int8.onnx $F/f1d/emtnet.int8.onnx $F/f1d $F/f0/split.json $BUSASSIST_DATA
$PY reports/int8-fidelity-search/fidelity.py Resources/Models/emtnet.onnx $F/f0/split.json $BUSASSIST_DATA $F/f1d/emtnet.int8.onnx
