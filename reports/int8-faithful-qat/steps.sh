#!/usr/bin/env bash
# The steps of PLAN.md, as run on 2026-12-07 (this machine's paths). Usage: steps.sh 0|1|2|3
set -euo pipefail
export BUSASSIST_DATA=/work/shared/data/busi
PY=/work/main/.venv/bin/python
GRAPH=/work/repro/runs/int8-reproduce-ema-3/exporter-graph.onnx     # 98770c53, the exporter's graph (make int8)
PREPARED=/work/repro/runs/int8-reproduce-ema-3/prepared             # make int8's equalised model and its int8 file
F=/work/repro/runs/int8-faithful
cd /work/main
case $1 in
0)  # F0: make int8's recipe without bias correction; then the simulation against it
  mkdir -p $F/f0 && cp $PREPARED/emtnet.onnx $PREPARED/split.json $F/f0/
  $PY -c "from busassist.training.quantize import quantize_run
quantize_run('$F/f0', '$BUSASSIST_DATA', float_ops=('Gemm',), reduce_range=True)"
  $PY reports/int8-faithful-qat/faithful.py check $GRAPH $F/f0/emtnet.int8.onnx $F/f0/split.json $BUSASSIST_DATA
  $PY reports/int8-faithful-qat/layers.py $GRAPH $F/f0/emtnet.int8.onnx $F/f0/split.json $BUSASSIST_DATA > reports/int8-faithful-qat/layers.jsonl ;;
1)  # fine-tune (3 epochs), F1 on F0's grid, F1 against its simulation
  $PY reports/int8-faithful-qat/faithful.py tune $GRAPH $F/f0/emtnet.int8.onnx $F/f0/split.json $BUSASSIST_DATA $F/f1 3
  $PY reports/int8-faithful-qat/faithful.py quantize $F/f1 $F/f0/emtnet.int8.onnx $BUSASSIST_DATA
  $PY reports/int8-faithful-qat/faithful.py compare $GRAPH $F/f0/emtnet.int8.onnx $F/f1/emtnet.int8.onnx $F/f1 $F/f0/split.json $BUSASSIST_DATA ;;
2)  # label-free gate: F1, F0 and make int8's file against the bundled float32 model
  $PY reports/int8-fidelity-search/fidelity.py Resources/Models/emtnet.onnx $F/f0/split.json $BUSASSIST_DATA \
    $F/f1/emtnet.int8.onnx $F/f0/emtnet.int8.onnx $PREPARED/emtnet.int8.onnx ;;
3)  # the rule, once (runs only after a go at step 2)
  $PY -c "from busassist.training.quantize import compare_int8
print(compare_int8('$F/f1', '$BUSASSIST_DATA', reference='Resources/Models/emtnet.onnx')['ship_int8'])" ;;
esac
