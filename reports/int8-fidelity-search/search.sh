#!/bin/bash
# Label-free (PLAN.md): one layer group at a time kept in float, with label_free.sh.
S=/work/repro/runs/int8-search
source "$(dirname "$0")/label_free.sh"
mkdir -p $S
R="reduce_range=True"
label_free stem+b0 "$R" /network/encoder/stem/ /network/encoder/blocks.0/
label_free b1-3 "$R" /network/encoder/blocks.1/ /network/encoder/blocks.2/ /network/encoder/blocks.3/
label_free b4-5 "$R" /network/encoder/blocks.4/ /network/encoder/blocks.5/
label_free b6-11 "$R" /network/encoder/blocks.6/ /network/encoder/blocks.7/ /network/encoder/blocks.8/ /network/encoder/blocks.9/ /network/encoder/blocks.10/ /network/encoder/blocks.11/
label_free b12 "$R" /network/encoder/blocks.12/
label_free d0-1 "$R" /network/segmenter/decoders.0/ /network/segmenter/decoders.1/
label_free d2-3 "$R" /network/segmenter/decoders.2/ /network/segmenter/decoders.3/
# Step 2 of PLAN.md (no group reached 0.985): the two best groups together, b1-3 (0.97169) and d0-1 (0.97158).
label_free b1-3+d0-1 "$R" /network/encoder/blocks.1/ /network/encoder/blocks.2/ /network/encoder/blocks.3/ /network/segmenter/decoders.0/ /network/segmenter/decoders.1/
echo DONE
