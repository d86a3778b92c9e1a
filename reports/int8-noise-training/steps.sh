#!/bin/bash
# The steps of PLAN.md, one at a time: steps.sh 1|2|3. Paths are those of the machine it ran on (2026-12-07):
# the training ran in the clone /work/repro (runs/noise-ema-3), this checkout holds the scripts.
set -u
RUN=/work/repro/runs/noise-ema-3
I=/work/repro/runs/int8-noise-ema-3
source "$(dirname "$0")/../int8-border-training/judge.sh"
case $1 in
1)  # make int8's settings on the run's own float32 model, scored against it; then input rounding alone
  make_int8_step || exit 1
  ;;
2) replacement_step ;;
3)  # the three bias-correction choices, each against the run's own float32 model
  for pick in "64 unused" "32 all" "200 all"; do set -- $pick
    $TRAIN tools quantize $I/prepared --data $BUSASSIST_DATA --float-op Gemm --reduce-range --bias-correction $1 \
      --bias-correction-pick $2 --against $RUN/emtnet.onnx --check; echo "exit $?"
  done ;;
esac
