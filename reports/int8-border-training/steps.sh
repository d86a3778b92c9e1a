#!/bin/bash
# The steps of PLAN.md, one at a time: steps.sh 1|2|3. Paths are those of the machine it ran on (2026-12-07):
# the training ran in the clone /work/repro (runs/border-ema-3), this checkout holds the scripts.
set -u
RUN=/work/repro/runs/border-ema-3
I=/work/repro/runs/int8-border-ema-3
source "$(dirname "$0")/judge.sh"
case $1 in
1)  # make int8's settings: exporter graph, equalisation, then the quantize of judge.sh's steps
  mkdir -p $I
  $TRAIN export $RUN --exporter-graph $I/exporter-graph.onnx > $I/step1.log 2>&1
  $TRAIN tools equalize $I/exporter-graph.onnx --out $I/prepared --data $BUSASSIST_DATA >> $I/step1.log 2>&1
  quantize_label_free $I/prepared bias_correction_images=64 >> $I/step1.log 2>&1 || { echo "quantize failed"; exit 1; }
  score_label_free
  ;;
2) replacement_step ;;
3) int8_rule_step ;;
esac
