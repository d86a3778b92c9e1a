"""How far one grey level of noise moves a model's answers: the tolerance for "the same picture" tests.

    python reports/ema-agreement/clean-seed-3/noise_floor.py SPLIT_JSON DATA_ROOT [MODEL ...]

Adds -1, 0 or +1 grey level to a random fifth of the pixels of the first 40 test images of SPLIT_JSON
(seeded) and prints, per model (default: the bundled one), the largest and median change of the
malignancy probability and the smallest and median mask Dice between the clean and the noisy image.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from busassist.core.inference import Analyzer


def main(split_json: str, data_root: str, *models: str) -> None:
    keys = json.loads(Path(split_json).read_text())["test"][:40]
    for model in models or (None,):
        analyzer = Analyzer(model, threads=2)
        rng = np.random.default_rng(0)
        moves, dices = [], []
        for key in keys:
            grey = np.asarray(Image.open(Path(data_root) / key).convert("L"))
            noise = rng.integers(-1, 2, grey.shape) * (rng.random(grey.shape) < 0.2)
            noisy = np.clip(grey.astype(int) + noise, 0, 255).astype(np.uint8)
            a, b = analyzer.analyze(grey), analyzer.analyze(noisy)
            ma, mb = a.mask > 0, b.mask > 0
            union = np.count_nonzero(ma) + np.count_nonzero(mb)
            moves.append(abs(a.probability - b.probability))
            dices.append(2 * np.count_nonzero(ma & mb) / union if union else 1.0)
        print(
            f"{analyzer.metadata.model_version}: {len(keys)} images; probability moves by at most "
            f"{max(moves):.3f} (median {np.median(moves):.1e}); mask Dice at least {min(dices):.3f} "
            f"(median {np.median(dices):.4f})"
        )


if __name__ == "__main__":
    main(*sys.argv[1:])
