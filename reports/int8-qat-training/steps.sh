#!/bin/bash
# The steps of PLAN.md, one at a time: steps.sh 1|2|3 [SETTING]. Paths are those of the machine it ran on
# (2026-12-07): the training ran in the clone /work/repro (runs/qat-ema-3), this checkout holds the scripts.
set -u
RUN=/work/repro/runs/qat-ema-3
I=/work/repro/runs/int8-qat-ema-3
source "$(dirname "$0")/../int8-border-training/judge.sh"
HERE=reports/int8-qat-training
case $1 in
1)  # four int8 forms, each against the run's own float32 model on the 48 held-out training images
  for ranges in percentile minmax; do
    for correction in 0 64; do
      name=$ranges-bc$correction
      copy_float32 $I/$name
      quantize_label_free $I/$name "method='$ranges', bias_correction_images=$correction" > $I/$name.log 2>&1 \
        || { echo "quantize $name failed"; exit 1; }
      score_against_own_float32 $I/$name/emtnet.int8.onnx "\"setting\": \"$name\", "
      $PY $HERE/label_proxy.py $RUN/emtnet.onnx $RUN/split.json $BUSASSIST_DATA $I/$name/emtnet.int8.onnx \
        | sed "s/^{/{\"step\": 1, \"setting\": \"$name\", \"measure\": \"label proxy (information only)\", /"
    done
  done
  score_input_rounding $I/percentile-bc0/emtnet.int8.onnx
  ;;
2) replacement_step ;;
3)  # SETTING: the step-1 candidate, e.g. minmax-bc0
  ranges=${2%-bc*}; correction=${2#*-bc}
  if [ "$correction" = 0 ]; then picks="none"; else picks="64:unused 32:all 200:all"; fi
  for pick in $picks; do
    options="--calibration $ranges"
    [ "$pick" != none ] && options="$options --bias-correction ${pick%:*} --bias-correction-pick ${pick#*:}"
    echo "== $2 $pick"
    $TRAIN tools quantize $I/$2 --data $BUSASSIST_DATA --float-op Gemm --reduce-range $options \
      --against $RUN/emtnet.onnx --check; echo "exit $?"
  done
  ;;
esac
