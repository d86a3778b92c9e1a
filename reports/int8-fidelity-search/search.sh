#!/bin/bash
# Label-free: quantize_run only (tools quantize would also score validation and test), then fidelity.py.
set -u  # paths are those of the machine it ran on (2026-12-07); quantize_run is the tool behind tools quantize
export BUSASSIST_DATA=/work/shared/data/busi
PY=/work/main/.venv/bin/python
P=/work/repro/runs/int8-reproduce-ema-3/prepared
S=/work/repro/runs/int8-search
mkdir -p $S
cd /work/main
run() {
  name=$1; shift
  D=$S/$name
  rm -rf $D; mkdir -p $D; cp $P/emtnet.onnx $P/split.json $P/equalization.json $D/
  $PY -c "
import sys
from busassist.training.quantize import quantize_run
quantize_run('$D', '$BUSASSIST_DATA', float_ops=('Gemm',), reduce_range=True, bias_correction_images=64, float_nodes=tuple(sys.argv[1:]))
" "$@" > $D.log 2>&1 || { echo "$name failed"; return; }
  $PY reports/int8-fidelity-search/fidelity.py Resources/Models/emtnet.onnx $P/split.json $BUSASSIST_DATA $D/emtnet.int8.onnx | sed "s/^{/{\"candidate\": \"$name\", /"
}
run stem+b0 /network/encoder/stem/ /network/encoder/blocks.0/
run b1-3 /network/encoder/blocks.1/ /network/encoder/blocks.2/ /network/encoder/blocks.3/
run b4-5 /network/encoder/blocks.4/ /network/encoder/blocks.5/
run b6-11 /network/encoder/blocks.6/ /network/encoder/blocks.7/ /network/encoder/blocks.8/ /network/encoder/blocks.9/ /network/encoder/blocks.10/ /network/encoder/blocks.11/
run b12 /network/encoder/blocks.12/
run d0-1 /network/segmenter/decoders.0/ /network/segmenter/decoders.1/
run d2-3 /network/segmenter/decoders.2/ /network/segmenter/decoders.3/
# Step 2 of PLAN.md (no group reached 0.985): the two best groups together, b1-3 (0.97169) and d0-1 (0.97158).
run b1-3+d0-1 /network/encoder/blocks.1/ /network/encoder/blocks.2/ /network/encoder/blocks.3/ /network/segmenter/decoders.0/ /network/segmenter/decoders.1/
echo DONE
