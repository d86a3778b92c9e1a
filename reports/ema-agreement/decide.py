"""Apply PLAN.md's rules A and B to the study's own files, so that the verdict is computed, not read off.

Written and committed before seeds 4 and 5 trained and before any test figure of the study existed.

    python reports/ema-agreement/decide.py runs/ema-agreement                 # rule A, and rule B's candidate
    python reports/ema-agreement/decide.py runs/ema-agreement CANDIDATE_RUN   # ... and rule B on the candidate's
                                                                              #   compare-vs-shipped.json

Reads ``summary.csv`` (``study run``), ``agreement.json`` (``study agreement``) and each EMA seed's
``history.csv``; standard library only. Exits 0 whatever the verdict (the verdict is what it prints),
1 when the files cannot support a decision (fewer than three seeds, a candidate run of another seed).

Amended before any test figure of the study was read (seed 4 training): rule B counts only an
interval wholly below 0, as PLAN.md says (the first version also counted an undefined interval, as
``compare --check`` does; it now prints a warning for one instead); the candidate run given must be
the chosen seed's EMA run; the summary must hold three replicates per variant.
"""

from __future__ import annotations

import csv
import json
import math
import sys
from itertools import combinations
from pathlib import Path

SEEDS = (3, 4, 5)
BEST, EMA = "keep-best", "keep-ema"
MARGIN = 0.01  # rule A.2: mean test AUC and Dice each >= the best epoch's - 0.01


def replicate_passes(agreement: dict, variant: str) -> tuple[int, int]:
    """(pairs that pass, pairs compared) among the seeds of one variant."""
    rows = [row for row in agreement["comparisons"] if row["kind"] == "replicates" and row["variant"] == variant]
    return sum(bool(row["passes"]) for row in rows), len(rows)


def means(summary: Path) -> dict[str, dict[str, float]]:
    """Per variant, its ``*_mean`` columns; refuses a summary of fewer than the plan's seeds."""
    with summary.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        if int(row["replicates"]) != len(SEEDS):
            print(f"no decision: {summary} has {row['replicates']} replicates of {row['variant']}, the plan needs 3")
            sys.exit(1)
    return {
        row["variant"]: {k: float(v) if v else math.nan for k, v in row.items() if k.endswith("_mean")} for row in rows
    }


def last_validation(history: Path) -> float:
    """val_auc + val_dice of the kept average: the last row of an EMA run's history.csv."""
    with history.open(newline="") as handle:
        last = list(csv.DictReader(handle))[-1]
    return float(last["val_auc"]) + float(last["val_dice"])


def rule_a(out: Path) -> bool:
    agreement = json.loads((out / "agreement.json").read_text())
    ema_pass, ema_pairs = replicate_passes(agreement, EMA)
    best_pass, best_pairs = replicate_passes(agreement, BEST)
    expected = len(list(combinations(SEEDS, 2)))
    if ema_pairs != expected or best_pairs != expected:
        print(f"no decision: {ema_pairs} EMA and {best_pairs} best-epoch pairs, the plan needs {expected} each")
        sys.exit(1)
    agree = ema_pass >= 2 and ema_pass > best_pass
    verdict = "met" if agree else "not met"
    print(f"A.1 agreement: EMA {ema_pass} of {ema_pairs} pairs pass, best epoch {best_pass} of {best_pairs}: {verdict}")
    table = means(out / "summary.csv")
    level = all(table[EMA][f"{m}_mean"] >= table[BEST][f"{m}_mean"] - MARGIN for m in ("auc", "dice"))
    for metric in ("auc", "dice"):
        delta = table[EMA][f"{metric}_mean"] - table[BEST][f"{metric}_mean"]
        ema, best = table[EMA][f"{metric}_mean"], table[BEST][f"{metric}_mean"]
        print(f"A.2 mean test {metric}: EMA {ema:.4f}, best {best:.4f} ({delta:+.4f})")
    print(f"A.2 both >= best - {MARGIN}: {'met' if level else 'not met'}")
    verdict = "HOLDS: the moving average becomes the recipe" if agree and level else "does not hold: the recipe stays"
    print(f"rule A: {verdict}")
    return agree and level


def rule_b_candidate(out: Path) -> int:
    scores = {seed: last_validation(out / EMA / f"seed-{seed}" / "history.csv") for seed in SEEDS}
    if not all(math.isfinite(score) for score in scores.values()):
        print(f"no decision: an undefined validation score {scores}")
        sys.exit(1)
    for seed, score in scores.items():
        print(f"B candidate score, seed {seed}: last-epoch val_auc + val_dice = {score:.4f}")
    chosen = max(SEEDS, key=lambda seed: (scores[seed], -seed))  # ties: the lower seed
    print(f"B candidate: seed {chosen}")
    return chosen


def rule_b(run: Path, chosen: int) -> bool:
    """One-sided: the candidate replaces the shipped model unless some paired interval lies wholly below 0."""
    config = json.loads((run / "config.json").read_text())["config"]
    if (config["seed"], config["keep"]) != (chosen, "ema"):
        print(f"no decision: {run} trained seed {config['seed']} with keep {config['keep']}, not seed {chosen} ema")
        sys.exit(1)
    report = json.loads((run / "compare-vs-shipped.json").read_text())
    for row in report.values():  # an undefined figure may be written as null
        row.update({key: math.nan if row[key] is None else row[key] for key in ("ci_low", "ci_high")})
    worse = [name for name, row in report.items() if row["ci_high"] < 0]  # NaN < 0 is False
    for name, row in report.items():
        if not (math.isfinite(row["ci_low"]) and math.isfinite(row["ci_high"])):
            print(f"B warning: {name} has an undefined interval (not counted as worse, by the plan's wording)")
    for name, row in report.items():
        interval = f"[{row['ci_low']:+.3f}, {row['ci_high']:+.3f}]"
        print(f"B {name}: {row['new']:.3f} vs shipped {row['reference']:.3f}, interval {interval}")
    verdict = "HOLDS: it replaces the shipped model" if not worse else "does not hold: worse beyond noise on "
    print(f"rule B: {verdict}{', '.join(worse)}")
    return not worse


def main(argv: list[str]) -> None:
    out = Path(argv[0])
    if rule_a(out):
        chosen = rule_b_candidate(out)
        if len(argv) > 1:
            rule_b(Path(argv[1]), chosen)


if __name__ == "__main__":
    main(sys.argv[1:])
