#!/bin/bash
# The probe of PLAN.md. Paths are those of the machine it ran on (2026-12-07); NNCF lives in /work/nncf-venv.
set -u
export BUSASSIST_DATA=/work/shared/data/busi
PY=/work/main/.venv/bin/python
NPY=/work/nncf-venv/bin/python
E=/work/repro/runs/int8-reproduce-ema-3
S=/work/repro/runs/int8-nncf
mkdir -p $S
cd /work/main
$PY reports/int8-nncf/dump_calibration.py $E/prepared/split.json $BUSASSIST_DATA $S/calibration.npy
$NPY reports/int8-nncf/nncf_quantize.py $E/exporter-graph.onnx $S/calibration.npy $S/nncf-fast.onnx fast 2> $S/nncf-fast.log
$NPY reports/int8-nncf/nncf_quantize.py $E/exporter-graph.onnx $S/calibration.npy $S/nncf-full.onnx full 2> $S/nncf-full.log
$NPY reports/int8-nncf/nncf_quantize.py $E/prepared/emtnet.onnx $S/calibration.npy $S/nncf-eq.onnx fast 2> $S/nncf-eq.log
for form in nncf-fast nncf-full nncf-eq; do
  [ -f $S/$form.onnx ] && $PY -c "from pathlib import Path; from busassist.core.model_store import write_checksum; write_checksum(Path('$S/$form.onnx'))"
done
$PY reports/int8-fidelity-search/fidelity.py Resources/Models/emtnet.onnx $E/prepared/split.json $BUSASSIST_DATA \
  $(ls $S/nncf-*.onnx)
