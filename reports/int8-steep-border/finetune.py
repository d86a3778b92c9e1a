"""The probe of PLAN.md: fine-tune 98770c53 for 3 epochs with a border-width term.

    python reports/int8-steep-border/finetune.py EXPORTER_GRAPH OUT DATA_ROOT LAMBDA

Writes OUT/emtnet.onnx (fast form, sealed), OUT/split.json and OUT/eq/ (the same network equalised as
``tools equalize`` does, 4 rounds, for ``quantize_run``: the exporter's graph of a network whose transposed
norms were folded cannot be read back, so it is equalised here); no test image is read. Uses the trainer's
own pieces (weights read back as ``tools qat`` does, the recipe's batches, augmentation and loss) plus
LAMBDA * mean(4 p (1 - p)) over the mask pixels.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from busassist.core.model_store import read_metadata
from busassist.training.augment import AugmentConfig
from busassist.training.equalize import equalise
from busassist.training.export import export_onnx, seal_model
from busassist.training.losses import border_band_loss, multitask_loss
from busassist.training.onnx_weights import fold_transposed_norms, network_from_onnx
from busassist.training.qat import _freeze_norms
from busassist.training.randomness import seed_everything
from busassist.training.trainer import TrainingBatches, write_recipe_split

EPOCHS, LEARNING_RATE, BATCH, SEED = 3, 1e-4, 16, 42


def main(model: str, out: str, data_root: str, weight: str) -> None:
    out_dir, border_weight = Path(out), float(weight)
    out_dir.mkdir(parents=True, exist_ok=True)
    metadata = read_metadata(Path(model))
    seed_everything(SEED)
    network = network_from_onnx(Path(model))
    fold_transposed_norms(network)
    data, split, _ = write_recipe_split(out_dir, Path(data_root), SEED)
    parameters = [p for p in network.parameters() if p.requires_grad]
    optimiser = torch.optim.Adam(parameters, lr=LEARNING_RATE)
    steps = EPOCHS * math.ceil(len(split.train) / BATCH)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, steps)
    generator = torch.Generator().manual_seed(SEED)
    train = np.array(split.train)
    history = []
    for epoch in range(EPOCHS):
        started = time.perf_counter()
        network.train()
        _freeze_norms(network)
        order = train[torch.randperm(len(train), generator=generator).numpy()]
        parts = []
        for inputs, masks, labels in TrainingBatches(data, order, BATCH, generator, AugmentConfig()):
            output = network(inputs)
            loss, _ = multitask_loss(
                output.class_logit, labels, output.mask_logit, masks, metadata.w_p, metadata.w_clf, 1.0, "batch"
            )
            band = border_band_loss(output.mask_logit)  # the trainer's --border term (same formula as when it ran)
            total = loss + border_weight * band
            optimiser.zero_grad(set_to_none=True)
            total.backward()
            optimiser.step()
            scheduler.step()
            parts.append((float(loss.detach()), float(band.detach())))
        mean = np.mean(parts, axis=0)
        history.append({"epoch": epoch + 1, "loss": mean[0], "band": mean[1], "seconds": time.perf_counter() - started})
        print(json.dumps(history[-1]), flush=True)
    network.eval()
    metadata.model_version += f"-border{border_weight:g}"
    export_onnx(network, out_dir / "emtnet.onnx", metadata, metadata.input_size)
    seal_model(out_dir / "emtnet.onnx")
    write_recipe_split(out_dir / "eq", Path(data_root), SEED)
    record = equalise(network, 4)
    metadata.extra = {**metadata.extra, "equalization": {"pairs": record["pairs"]}}
    export_onnx(network.eval(), out_dir / "eq" / "emtnet.onnx", metadata, metadata.input_size)
    (out_dir / "finetune.json").write_text(json.dumps({"lambda": border_weight, "history": history}, indent=1) + "\n")


if __name__ == "__main__":
    main(*sys.argv[1:])
