#!/bin/bash
set -u
export BUSASSIST_DATA=/work/shared/data/busi
P=/work/repro/runs/int8-reproduce-ema-3/prepared
S=/work/repro/runs/int8-budget/qat-equalised
rm -rf $S; mkdir -p $S
cd /work/main
.venv/bin/busassist-train tools qat $P/emtnet.onnx --out $S --data $BUSASSIST_DATA --objective teacher --epochs 4 --lr 2e-5 > $S.qat.log 2>&1 || { echo qat failed; exit 1; }
.venv/bin/python -c "
from busassist.training.quantize import quantize_run
quantize_run('$S', '$BUSASSIST_DATA', float_ops=('Gemm',), reduce_range=True, bias_correction_images=64)
" > $S.quantize.log 2>&1 || { echo quantize failed; exit 1; }
.venv/bin/python reports/int8-fidelity-search/fidelity.py Resources/Models/emtnet.onnx $P/split.json $BUSASSIST_DATA $S/emtnet.int8.onnx | sed 's/^{/{"candidate": "qat from the equalised graph, teacher, 4 epochs", /'
echo DONE
