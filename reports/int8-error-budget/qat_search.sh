#!/bin/bash
# Searches 5 and 6 of PLAN.md (label-free): tools qat's fine-tuning from the equalised network (qat_equalised.py),
# then make int8's quantisation without further equalisation, scored by fidelity.py, with two diagnoses.
#   search 5: qat_search.sh qat-equalised teacher 2e-5 "qat from the equalised graph, teacher, 4 epochs"
#   search 6: qat_search.sh qat-logits logits 1e-5 "qat from the equalised graph, logits, 4 epochs, 1e-5"
set -u
name=$1; objective=$2; rate=$3; label=$4
export BUSASSIST_DATA=/work/shared/data/busi
PY=/work/main/.venv/bin/python
G=/work/repro/runs/int8-reproduce-ema-3/exporter-graph.onnx
P=/work/repro/runs/int8-reproduce-ema-3/prepared
S=/work/repro/runs/int8-budget/$name
rm -rf $S; mkdir -p $S
cd /work/main
score() {  # score REFERENCE FILE TAG: one fidelity.py line, tagged
  $PY reports/int8-fidelity-search/fidelity.py $1 $P/split.json $BUSASSIST_DATA $2 | sed "s/^{/{\"candidate\": \"$3\", /"
}
$PY reports/int8-error-budget/qat_equalised.py $G $S/qat $BUSASSIST_DATA $objective $rate > $S.qat.log 2>&1 || { echo qat failed; exit 1; }
$PY -c "
from busassist.training.quantize import quantize_run
quantize_run('$S/qat', '$BUSASSIST_DATA', float_ops=('Gemm',), reduce_range=True, bias_correction_images=64)
" > $S.quantize.log 2>&1 || { echo quantize failed; exit 1; }
score Resources/Models/emtnet.onnx $S/qat/emtnet.int8.onnx "$label"
# Diagnosis: the fine-tuned float32 model itself (sealed copy) against the bundled one, before any rounding
cp $S/qat/emtnet.onnx $S/qat-fp32.onnx
$PY -c "import sys; from pathlib import Path; from busassist.training.export import seal_model; seal_model(Path(sys.argv[1]))" $S/qat-fp32.onnx
score Resources/Models/emtnet.onnx $S/qat-fp32.onnx "its float32 form (diagnosis)"
# Diagnosis: its int8 against its own float32 form (does fine-tuning make the model's border robust to rounding?)
score $S/qat-fp32.onnx $S/qat/emtnet.int8.onnx "its int8 against its own float32 form (diagnosis)"
echo DONE
