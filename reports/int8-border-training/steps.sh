#!/bin/bash
# The steps of PLAN.md, one at a time: steps.sh 1|2|3. Paths are those of the machine it ran on (2026-12-07):
# the training ran in the clone /work/repro (runs/border-ema-3), this checkout holds the scripts.
set -u
RUN=/work/repro/runs/border-ema-3
I=/work/repro/runs/int8-border-ema-3
source "$(dirname "$0")/judge.sh"
case $1 in
1)  # make int8's settings: exporter graph, equalisation, then the quantize of judge.sh's steps
  make_int8_step || exit 1
  ;;
2) replacement_step ;;
3) int8_rule_step ;;
esac
