"""Step 2: how often would the int8 rule's verdict for one file come out "passes" on a resample of the images?

    python reports/int8-rule-resolution/verdict.py NAME FP32 INT8 DATA_ROOT [COMMITTED_JSON]

Scores both models on the fixed split every card uses, exactly as ``compare_int8`` does (``analyse_cases``,
the float32 model's W' = W_p threshold for both), rebuilds the paired engine's intervals and, on the
engine's own resamples (2000, seed 0, drawn by ``metrics.bootstrap_values``, the draws behind
``bootstrap_interval``), counts the resamples on which the rule (AUC and Dice drop each at most ``MAX_DROP``) passes.
The share is centred on the observed change, not on the file's true one: it says how firmly these images
hold the verdict, not the chance that another sample repeats it (that would sit nearer 50 %). The whole
rule's share is the product of the two splits' shares: the engine draws the same index vectors for both
93-image splits, so pairing resample k of each would correlate them.
With COMMITTED_JSON (a committed ``int8_comparison`` of the same pair) the rebuilt change and interval
must match it, or the script stops: then it is not the pair that was judged. Prints one JSON line.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from busassist.constants import threshold_for_effective_weight
from busassist.core.inference import Analyzer
from busassist.training.busi import discover, near_duplicate_groups, stratified_group_split
from busassist.training.evaluate import analyse_cases
from busassist.training.metrics import bootstrap_values
from busassist.training.paired_compare import metric, paired_differences
from busassist.training.quantize import MAX_DROP
from busassist.training.reference import REFERENCE_RUNTIME

RESAMPLES, SEED = 2000, 0  # paired_differences' defaults
METRICS = ("auc", "dice")


def scored_splits(fp32: Path, int8: Path, data_root: Path) -> tuple[dict, float]:
    """{split: {model: per-image results}} on validation and test, and the float32 decision threshold."""
    cases = discover(data_root)
    _, validation, test = stratified_group_split(cases, near_duplicate_groups(data_root / "near_duplicates.json"))
    analyzers = {
        name: Analyzer(path, verify=False, backend=REFERENCE_RUNTIME) for name, path in (("fp32", fp32), ("int8", int8))
    }
    w_p = analyzers["fp32"].metadata.w_p
    scored = {
        split: {name: analyse_cases(analyzer, [cases[i] for i in part]) for name, analyzer in analyzers.items()}
        for split, part in (("validation", validation), ("test", test))
    }
    return scored, threshold_for_effective_weight(w_p, w_p)


def resampled_changes(results: dict, threshold: float) -> dict[str, np.ndarray]:
    """int8 - float32 per metric on each of the engine's resamples (NaN where a resample leaves it undefined)."""

    def change(ix: np.ndarray, name: str) -> float:
        return metric(name, results["int8"], ix, threshold) - metric(name, results["fp32"], ix, threshold)

    count = len(results["fp32"]["labels"])
    return {name: bootstrap_values(lambda ix, n=name: change(ix, n), count, RESAMPLES, SEED) for name in METRICS}


def check_against(committed: dict, rebuilt: dict, split: str) -> None:
    """Stop unless the rebuilt intervals are the committed ones (to 1e-9)."""
    for name in METRICS:
        for key in ("difference", "ci_low", "ci_high"):
            was, now = committed[split]["paired_int8_minus_fp32"][name][key], rebuilt[name][key]
            if abs(was - now) > 1e-9:
                sys.exit(f"{split} {name} {key}: rebuilt {now:.6f}, committed {was:.6f}: not the judged pair")


def main(name: str, fp32: str, int8: str, data_root: str, committed_json: str | None = None) -> None:
    scored, threshold = scored_splits(Path(fp32), Path(int8), Path(data_root))
    committed = json.loads(Path(committed_json).read_text()) if committed_json else None
    row: dict = {"pair": name, "limit": MAX_DROP, "resamples": RESAMPLES, "checked_against": committed_json}
    passing = {}
    for split, results in scored.items():
        rebuilt = paired_differences(results["int8"], results["fp32"], threshold, threshold)
        if committed is not None:
            check_against(committed, rebuilt, split)
        changes = resampled_changes(results, threshold)
        ok = {m: changes[m] >= -MAX_DROP for m in METRICS}  # NaN compares False: an undefined drop fails
        passing[split] = ok["auc"] & ok["dice"]
        row[split] = {
            **{f"{m}_change": round(rebuilt[m]["difference"], 4) for m in METRICS},
            **{f"{m}_interval": [round(rebuilt[m]["ci_low"], 4), round(rebuilt[m]["ci_high"], 4)] for m in METRICS},
            **{f"{m}_passes": round(float(ok[m].mean()), 3) for m in METRICS},
            "rule_passes": round(float(passing[split].mean()), 3),
            "rule_on_all_images": bool(all(rebuilt[m]["difference"] >= -MAX_DROP for m in METRICS)),
        }
    row["whole_rule_passes"] = round(float(passing["validation"].mean() * passing["test"].mean()), 3)
    print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
