#!/bin/bash
# Search 7 of PLAN.md, label-free, with reports/int8-fidelity-search/label_free.sh.
S=/work/repro/runs/int8-percentile
source "$(dirname "$0")/../int8-fidelity-search/label_free.sh"
mkdir -p $S
label_free p99.99 "reduce_range=True, percentile=99.99"
label_free p99.9 "reduce_range=True, percentile=99.9"
echo DONE
