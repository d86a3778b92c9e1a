"""The terms of the fine-tuning objectives on 16 bias-correction images, the file-read simulation untrained.

    python reports/int8-faithful-qat-mask/loss_terms.py EXPORTER_GRAPH F0_INT8 SPLIT_JSON DATA_ROOT

What this plan rests on: the squared malignancy-logit error the earlier objectives carried is 60 to 600
times their mask terms, on logits that int8 moves without moving the probability.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F  # noqa: N812

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "int8-faithful-qat"))

import faithful  # noqa: E402

from busassist.training import qat  # noqa: E402
from busassist.training.losses import border_band  # noqa: E402


def main(exporter_graph: str, f0: str, split_json: str, data_root: str) -> None:
    torch.set_num_threads(2)
    inputs = faithful.correction_inputs(Path(split_json), Path(data_root))[:16]
    teacher = faithful.equalised_network(Path(exporter_graph))
    simulation = faithful.equalised_network(Path(exporter_graph))
    faithful.simulate_file(simulation, faithful.rounding_points(Path(f0)))
    with torch.no_grad():
        output, target = simulation(inputs), teacher(inputs)
    weight = qat.FAR_FROM_BORDER_WEIGHT + border_band(target.mask_logit)
    probability = torch.sigmoid(target.class_logit)
    terms = {
        "mask, squared logits (attempts 1, 2)": (weight * (output.mask_logit - target.mask_logit) ** 2).mean(),
        "mask, signs (attempts 3, 4)": F.binary_cross_entropy_with_logits(
            output.mask_logit, (target.mask_logit > 0).float(), weight=weight
        ),
        "malignancy, squared logit (attempts 1-3)": F.mse_loss(output.class_logit, target.class_logit),
        "malignancy, divergence of the probability (attempt 4, qat.logit_matching_loss now)": (
            F.binary_cross_entropy_with_logits(output.class_logit, probability)
            - F.binary_cross_entropy_with_logits(target.class_logit, probability)
        ),
    }
    for term, value in terms.items():
        print(json.dumps({"term": term, "value": round(float(value), 6)}))
    print(json.dumps({"float32 malignancy logits": [round(float(v), 2) for v in target.class_logit.flatten()]}))
    print(json.dumps({"simulated malignancy logits": [round(float(v), 2) for v in output.class_logit.flatten()]}))


if __name__ == "__main__":
    main(*sys.argv[1:])
