# Sourced by the steps.sh of reports/int8-border-training, int8-relu6, int8-qat-training and int8-noise-training (2026-12-07; this
# machine's paths). Each caller sets RUN (the training's run folder) and I (its int8 folder, with
# prepared/emtnet.int8.onnx written by its own step 1, where it uses score_label_free) and calls these.
export BUSASSIST_DATA=/work/shared/data/busi
TRAIN=/work/repro/.venv/bin/busassist-train
PY=/work/main/.venv/bin/python
cd /work/main

# The run's float32 model, its checksum and split, copied into folder $1 for quantize_label_free.
copy_float32() {
  mkdir -p $1
  cp $RUN/emtnet.onnx $RUN/emtnet.onnx.sha256 $RUN/split.json $1/
}

# The prepared model in folder $1 quantised as make int8 does (7-bit weights, dense layers in float), plus the
# keyword arguments $2. quantize_run, not `tools quantize`, which would also score validation and test.
quantize_label_free() {
  $PY -c "
from busassist.training.quantize import quantize_run
quantize_run('$1', '$BUSASSIST_DATA', float_ops=('Gemm',), reduce_range=True, $2)
"
}

# Int8 file $1 against the run's own float32 model on the 48 held-out training images of fidelity.py (no
# validation or test image); $2: JSON fields put before "measure" (each ending in ", ").
score_against_own_float32() {
  $PY reports/int8-fidelity-search/fidelity.py $RUN/emtnet.onnx $RUN/split.json $BUSASSIST_DATA $1 \
    | sed "s/^{/{\"step\": 1, ${2:-}\"measure\": \"int8 against its own float32\", /"
}

# Only the input rounded to int8 file $1's input grid, scored as above.
score_input_rounding() {
  $PY reports/int8-error-budget/input_grid.py $RUN/emtnet.onnx $1 $I/input-grid.onnx > /dev/null
  $PY reports/int8-fidelity-search/fidelity.py $RUN/emtnet.onnx $RUN/split.json $BUSASSIST_DATA $I/input-grid.onnx \
    | sed 's/^{/{"step": 1, "measure": "input rounding", /'
}

# Step 1's scores: the int8 file, then input rounding alone.
score_label_free() {
  score_against_own_float32 $I/prepared/emtnet.int8.onnx
  score_input_rounding $I/prepared/emtnet.int8.onnx
}

# Step 1 of the full trainings (border band, noise): make int8's settings on the run's own float32 model (exporter
# graph, equalisation, 64 bias-correction images), then score_label_free.
make_int8_step() {
  mkdir -p $I
  $TRAIN export $RUN --exporter-graph $I/exporter-graph.onnx > $I/step1.log 2>&1
  $TRAIN tools equalize $I/exporter-graph.onnx --out $I/prepared --data $BUSASSIST_DATA >> $I/step1.log 2>&1
  quantize_label_free $I/prepared bias_correction_images=64 >> $I/step1.log 2>&1 || { echo "quantize failed"; return 1; }
  score_label_free
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
