"""The terms of the fine-tuning objectives on the 64 bias-correction images, the file-read simulation untrained.

    python reports/int8-faithful-qat-mask/loss_terms.py EXPORTER_GRAPH F0_INT8 SPLIT_JSON DATA_ROOT

What this plan rests on: the squared malignancy-logit error the earlier objectives carried is 60 to 600
times their mask terms, on logits that int8 moves without moving the probability.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn.functional as F  # noqa: N812

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "int8-faithful-qat"))

import faithful  # noqa: E402

from busassist.training import qat  # noqa: E402


def main(exporter_graph: str, f0: str, split_json: str, data_root: str) -> None:
    torch.set_num_threads(2)
    inputs = faithful.correction_inputs(Path(split_json), Path(data_root))  # 64: 40 benign, 20 malignant, 4 normal
    teacher = faithful.equalised_network(Path(exporter_graph))
    simulation = faithful.equalised_network(Path(exporter_graph))
    faithful.simulate_file(simulation, faithful.rounding_points(Path(f0)))
    with torch.no_grad():  # the terms are means over pixels or images, so batches of 16 are averaged
        pairs = [(simulation(inputs[i : i + 16]), teacher(inputs[i : i + 16])) for i in range(0, len(inputs), 16)]
    output = SimpleNamespace(**{k: torch.cat([getattr(o, k) for o, _ in pairs]) for k in ("mask_logit", "class_logit")})
    target = SimpleNamespace(**{k: torch.cat([getattr(t, k) for _, t in pairs]) for k in ("mask_logit", "class_logit")})
    weight = qat.border_weight(target)
    terms = {
        "mask, squared logits (attempts 1, 2)": (weight * (output.mask_logit - target.mask_logit) ** 2).mean(),
        "mask, signs (attempts 3, 4)": F.binary_cross_entropy_with_logits(
            output.mask_logit, (target.mask_logit > 0).float(), weight=weight
        ),
        "malignancy, squared logit (attempts 1-3)": F.mse_loss(output.class_logit, target.class_logit),
        "malignancy, divergence of the probability (attempt 4, qat.logit_matching_loss now)": (
            qat.malignancy_divergence(output, target)
        ),
    }
    for term, value in terms.items():
        print(json.dumps({"term": term, "value": round(float(value), 6)}))
    logits, moved = target.class_logit.flatten(), (output.class_logit - target.class_logit).flatten().abs()
    probabilities = (torch.sigmoid(output.class_logit) - torch.sigmoid(target.class_logit)).flatten().abs()
    print(
        json.dumps(
            {
                "float32 malignancy logits, range": [round(float(logits.min()), 2), round(float(logits.max()), 2)],
                "share with |logit| > 8": round(float((logits.abs() > 8).float().mean()), 3),
                "simulation moves the logit by, mean and largest": [
                    round(float(moved.mean()), 2),
                    round(float(moved.max()), 2),
                ],
                "and the probability by, mean and largest": [
                    round(float(probabilities.mean()), 5),
                    round(float(probabilities.max()), 5),
                ],
            }
        )
    )


if __name__ == "__main__":
    main(*sys.argv[1:])
