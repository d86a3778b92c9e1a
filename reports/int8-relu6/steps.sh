#!/bin/bash
# The steps of PLAN.md, one at a time: steps.sh 1|2|3. Paths are those of the machine it ran on (2026-12-07):
# the training ran in the clone /work/repro (runs/relu6-ema-3), this checkout holds the scripts.
set -u
RUN=/work/repro/runs/relu6-ema-3
I=/work/repro/runs/int8-relu6-ema-3
source "$(dirname "$0")/../int8-border-training/judge.sh"
case $1 in
1)  # the run's own float32 model quantised (no equalisation: not valid across ReLU6)
  copy_float32 $I/prepared
  quantize_label_free $I/prepared bias_correction_images=64 > $I/step1.log 2>&1 || { echo "quantize failed"; exit 1; }
  score_label_free
  ;;
2) replacement_step ;;
3) int8_rule_step ;;
esac
