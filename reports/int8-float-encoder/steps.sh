#!/usr/bin/env bash
# PLAN.md of this folder, as run on 2026-12-07 (this machine's paths). Usage: steps.sh A|B
set -uo pipefail
export BUSASSIST_DATA=/work/shared/data/busi
PY=/work/main/.venv/bin/python
TRAIN=/work/main/.venv/bin/busassist-train
P=/work/repro/runs/int8-reproduce-ema-3/prepared          # make int8's equalised graph of 98770c53
S=/work/repro/runs/int8-float-encoder
R=reports/int8-float-encoder
cd /work/main
case $1 in
A)  # the candidate of reports/int8-error-budget (encoder in float, 64 unused bias-correction images), timed
  $PY $R/timing.py Resources/Models/emtnet.onnx /work/repro/runs/int8-budget/encoder-float/emtnet.int8.onnx \
    $P/emtnet.int8.onnx 3 > $R/timing.jsonl ;;
B)  # the rule for the three bias-correction choices
  for choice in "64-unused 64 unused" "32-all 32 all" "200-all 200 all"; do set -- $choice
    mkdir -p $S/$1 && cp $P/emtnet.onnx $P/split.json $P/equalization.json $S/$1/
    $TRAIN tools quantize $S/$1 --data $BUSASSIST_DATA --float-op Gemm --float-node /network/encoder/ --reduce-range \
      --bias-correction $2 --bias-correction-pick $3 --against Resources/Models/emtnet.onnx --check > $S/$1.log 2>&1
    echo "{\"choice\": \"$1\", \"exit\": $?}" | tee -a $R/step_b.jsonl
    cp $S/$1/int8_comparison.json $R/$1.json
  done
  # label-free agreement of the file judged with 64 unused images and of the error budget's (timed in A)
  $PY reports/int8-fidelity-search/fidelity.py Resources/Models/emtnet.onnx $P/split.json $BUSASSIST_DATA \
    $S/64-unused/emtnet.int8.onnx /work/repro/runs/int8-budget/encoder-float/emtnet.int8.onnx > $R/fidelity.jsonl ;;
esac
