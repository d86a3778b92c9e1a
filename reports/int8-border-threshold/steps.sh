#!/usr/bin/env bash
# PLAN.md of this folder, as run on 2026-12-07 (this machine's paths). Usage: steps.sh 0|1|2|3 CANDIDATE (make-int8|float-encoder)
set -uo pipefail
export BUSASSIST_DATA=/work/shared/data/busi
PY=/work/main/.venv/bin/python
R=reports/int8-border-threshold
S=/work/repro/runs/int8-border-threshold/$2
case $2 in
make-int8) SOURCES="64-unused:/work/repro/runs/int8-reproduce-ema-3/prepared 32-all:/work/repro/runs/int8-reproduce-ema-3/bc-32-all 200-all:/work/repro/runs/int8-reproduce-ema-3/bc-200-all" ;;
float-encoder) SOURCES="64-unused:/work/repro/runs/int8-float-encoder/64-unused 32-all:/work/repro/runs/int8-float-encoder/32-all 200-all:/work/repro/runs/int8-float-encoder/200-all" ;;
esac
cd /work/main
case $1 in
0)  # the border bias the plan rests on (both candidates' 64-unused files)
  $PY $R/border_bias.py /work/repro/runs/int8-reproduce-ema-3/prepared/split.json $BUSASSIST_DATA \
    make-int8=/work/repro/runs/int8-reproduce-ema-3/prepared/emtnet.int8.onnx \
    float-encoder=/work/repro/runs/int8-float-encoder/64-unused/emtnet.int8.onnx > $R/border_bias.jsonl ;;
1)  # a copy of each judged file, given its own mask threshold
  for source in $SOURCES; do name=${source%%:*}; from=${source#*:}
    mkdir -p $S/$name && cp $from/emtnet.int8.onnx $from/split.json $from/int8_calibration.json $S/$name/
    $PY $R/threshold.py $S/$name/emtnet.int8.onnx $S/$name/split.json $BUSASSIST_DATA | sed "s/^{/{\"candidate\": \"$2\", \"choice\": \"$name\", /" >> $R/thresholds.jsonl
  done ;;
2)  # the label-free gate
  $PY reports/int8-fidelity-search/fidelity.py Resources/Models/emtnet.onnx $S/64-unused/split.json $BUSASSIST_DATA \
    $S/64-unused/emtnet.int8.onnx | sed "s/^{/{\"candidate\": \"$2\", \"step\": 2, /; s#/work/repro/runs/##" >> $R/results.jsonl ;;
3)  # the rule, once per file
  for source in $SOURCES; do name=${source%%:*}
    $PY -c "from busassist.training.quantize import compare_int8
f = compare_int8('$S/$name', '$BUSASSIST_DATA', reference='Resources/Models/emtnet.onnx')
print(f['ship_int8'], round(f['validation']['auc_drop'], 4), round(f['validation']['dice_drop'], 4), round(f['test']['auc_drop'], 4), round(f['test']['dice_drop'], 4))" \
      | sed "s/^/$2 $name /" | tee -a $R/rule.txt
    cp $S/$name/int8_comparison.json $R/$2-$name.json
  done ;;
esac
