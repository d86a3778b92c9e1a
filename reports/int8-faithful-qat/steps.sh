#!/usr/bin/env bash
# The steps of PLAN.md, as run on 2026-12-07 (this machine's paths). Usage: steps.sh 0|1|2|1b|1c|old|3
# (results.jsonl: rows without "attempt" are attempt 1's)
set -euo pipefail
export BUSASSIST_DATA=/work/shared/data/busi
PY=/work/main/.venv/bin/python
TRAIN=/work/main/.venv/bin/busassist-train
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
1b)  # attempt 2: biases corrected in the simulation, then the same fine-tune; and the corrected one alone (F1b-0)
  for run in "f1b 3" "f1b-0 0"; do set -- $run
    $PY reports/int8-faithful-qat/faithful.py tune $GRAPH $F/f0/emtnet.int8.onnx $F/f0/split.json $BUSASSIST_DATA $F/$1 $2 yes
    $PY reports/int8-faithful-qat/faithful.py quantize $F/$1 $F/f0/emtnet.int8.onnx $BUSASSIST_DATA
  done
  $PY reports/int8-faithful-qat/faithful.py compare $GRAPH $F/f0/emtnet.int8.onnx $F/f1b/emtnet.int8.onnx $F/f1b $F/f0/split.json $BUSASSIST_DATA
  $PY reports/int8-fidelity-search/fidelity.py Resources/Models/emtnet.onnx $F/f0/split.json $BUSASSIST_DATA \
    $F/f1b/emtnet.int8.onnx $F/f1b-0/emtnet.int8.onnx ;;
1c)  # attempt 3: the sign objective, from the corrected simulation
  $PY reports/int8-faithful-qat/faithful.py tune $GRAPH $F/f0/emtnet.int8.onnx $F/f0/split.json $BUSASSIST_DATA $F/f1c 3 yes sign
  $PY reports/int8-faithful-qat/faithful.py quantize $F/f1c $F/f0/emtnet.int8.onnx $BUSASSIST_DATA
  $PY reports/int8-faithful-qat/faithful.py compare $GRAPH $F/f0/emtnet.int8.onnx $F/f1c/emtnet.int8.onnx $F/f1c $F/f0/split.json $BUSASSIST_DATA
  $PY reports/int8-fidelity-search/fidelity.py Resources/Models/emtnet.onnx $F/f0/split.json $BUSASSIST_DATA $F/f1c/emtnet.int8.onnx ;;
old)  # diagnosis after the stop: the previous model 804d8d00 (exporter form, first shipped), the same recipe
  git show 7cabf4d:Resources/Models/emtnet.onnx > $F/old-exporter.onnx
  $TRAIN tools equalize $F/old-exporter.onnx --out $F/old-f0 --data $BUSASSIST_DATA
  $PY -c "from busassist.training.quantize import quantize_run
quantize_run('$F/old-f0', '$BUSASSIST_DATA', float_ops=('Gemm',), reduce_range=True)"
  $PY reports/int8-faithful-qat/faithful.py check $F/old-exporter.onnx $F/old-f0/emtnet.int8.onnx $F/old-f0/split.json $BUSASSIST_DATA
  $PY reports/int8-faithful-qat/layers.py $F/old-exporter.onnx $F/old-f0/emtnet.int8.onnx $F/old-f0/split.json $BUSASSIST_DATA \
    > reports/int8-faithful-qat/layers-804d8d00.jsonl ;;
3)  # the rule, once (runs only after a go at step 2)
  $PY -c "from busassist.training.quantize import compare_int8
print(compare_int8('$F/f1', '$BUSASSIST_DATA', reference='Resources/Models/emtnet.onnx')['ship_int8'])" ;;
esac
