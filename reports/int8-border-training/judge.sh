# Sourced by the steps.sh of reports/int8-border-training and reports/int8-relu6 (2026-12-07; this machine's
# paths). Each caller sets RUN (the training's run folder) and I (its int8 folder, with prepared/emtnet.int8.onnx
# written by its own step 1) and calls one of these.
export BUSASSIST_DATA=/work/shared/data/busi
TRAIN=/work/repro/.venv/bin/busassist-train
PY=/work/main/.venv/bin/python
cd /work/main

# Step 1's scores: the int8 file, then input rounding alone, each against the run's own float32 model on the 48
# held-out training images of fidelity.py (no validation or test image).
score_label_free() {
  $PY reports/int8-fidelity-search/fidelity.py $RUN/emtnet.onnx $RUN/split.json $BUSASSIST_DATA $I/prepared/emtnet.int8.onnx \
    | sed 's/^{/{"step": 1, "measure": "int8 against its own float32", /'
  $PY reports/int8-error-budget/input_grid.py $RUN/emtnet.onnx $I/prepared/emtnet.int8.onnx $I/input-grid.onnx > /dev/null
  $PY reports/int8-fidelity-search/fidelity.py $RUN/emtnet.onnx $RUN/split.json $BUSASSIST_DATA $I/input-grid.onnx \
    | sed 's/^{/{"step": 1, "measure": "input rounding", /'
}

# Step 2: the replacement rule against the shipped card.
replacement_step() {
  $TRAIN compare $RUN --replace; echo "exit $?"
}

# Step 3: the int8 rule, once, with the step-1 setting (7-bit, dense layers in float, 64 bias-correction images).
int8_rule_step() {
  $TRAIN tools quantize $I/prepared --data $BUSASSIST_DATA --float-op Gemm --reduce-range --bias-correction 64 \
    --against $RUN/emtnet.onnx --check; echo "exit $?"
}
