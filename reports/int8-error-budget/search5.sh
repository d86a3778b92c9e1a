#!/bin/bash
# Search 5 of PLAN.md (label-free): tools qat's fine-tuning from the equalised network (qat_equalised.py), then make int8's
# quantisation without further equalisation, scored by fidelity.py against the bundled float32 model.
set -u
export BUSASSIST_DATA=/work/shared/data/busi
G=/work/repro/runs/int8-reproduce-ema-3/exporter-graph.onnx
P=/work/repro/runs/int8-reproduce-ema-3/prepared
S=/work/repro/runs/int8-budget/qat-equalised
rm -rf $S; mkdir -p $S
cd /work/main
.venv/bin/python reports/int8-error-budget/qat_equalised.py $G $S/qat $BUSASSIST_DATA > $S.qat.log 2>&1 || { echo qat failed; exit 1; }
.venv/bin/python -c "
from busassist.training.quantize import quantize_run
quantize_run('$S/qat', '$BUSASSIST_DATA', float_ops=('Gemm',), reduce_range=True, bias_correction_images=64)
" > $S.quantize.log 2>&1 || { echo quantize failed; exit 1; }
.venv/bin/python reports/int8-fidelity-search/fidelity.py Resources/Models/emtnet.onnx $P/split.json $BUSASSIST_DATA $S/qat/emtnet.int8.onnx | sed 's/^{/{"candidate": "qat from the equalised graph, teacher, 4 epochs", /'
# Diagnosis: the fine-tuned float32 model itself (sealed copy) against the bundled one, before any rounding
cp $S/qat/emtnet.onnx $S/qat-fp32.onnx && .venv/bin/python -c "import sys; from pathlib import Path; from busassist.training.export import seal_model; seal_model(Path(sys.argv[1]))" $S/qat-fp32.onnx
.venv/bin/python reports/int8-fidelity-search/fidelity.py Resources/Models/emtnet.onnx $P/split.json $BUSASSIST_DATA $S/qat-fp32.onnx | sed 's/^{/{"candidate": "its float32 form (diagnosis)", /'
# Diagnosis: its int8 against its own float32 form (does fine-tuning make the model's border robust to rounding?)
.venv/bin/python reports/int8-fidelity-search/fidelity.py $S/qat-fp32.onnx $P/split.json $BUSASSIST_DATA $S/qat/emtnet.int8.onnx | sed 's/^{/{"candidate": "its int8 against its own float32 form (diagnosis)", /'
echo DONE
