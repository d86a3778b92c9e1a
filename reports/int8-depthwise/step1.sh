#!/bin/bash
# Step 1 of PLAN.md, label-free, with reports/int8-fidelity-search/label_free.sh.
S=/work/repro/runs/int8-depthwise
source "$(dirname "$0")/../int8-fidelity-search/label_free.sh"
mkdir -p $S
label_free dw8 "reduce_range=True, full_range_depthwise=True"
label_free all-8-bit-vnni-only "reduce_range=False"
echo DONE
