"""Where the int8 masks of the quantisation-aware run part from float32's: a diagnostic after step 1 (no labels).

    python reports/int8-qat-training/simulation_gap.py RUN INT8_FILE DATA_ROOT

On fidelity.py's 48 held-out training images, at the network's own output (224 px mask logits cut at 0,
before the lesion rule and the resize back), it compares four forms of the run's moving average: the
training's own int8 simulation (PyTorch, the ranges it reached), the same weights in float (``best.pt``),
the exported float32 file and its int8 file (onnxruntime). One JSON line per pair: mean and lowest Dice.
"""

from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "int8-fidelity-search"))

from fidelity import held_out_training_keys  # noqa: E402

from busassist.training.averaging import moving_average  # noqa: E402
from busassist.training.busi import discover, prepare  # noqa: E402
from busassist.training.metrics import dice_iou  # noqa: E402
from busassist.training.model import EMTNet, Task  # noqa: E402
from busassist.training.qat import observe, simulate_int8  # noqa: E402
from busassist.training.trainer import load_best, to_network_input  # noqa: E402


def masks_of_session(path: Path, inputs: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: inputs[i : i + 8]})[1] for i in range(0, len(inputs), 8)]) > 0


def mean_dice(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Mean and lowest Dice of two stacks of masks, image by image (two empty masks agree: 1.0)."""
    dices = [dice_iou(x, y)[0] for x, y in zip(a, b)]
    return round(float(np.mean(dices)), 5), round(float(np.min(dices)), 4)


def main(run: str, int8_file: str, data_root: str) -> None:
    torch.set_num_threads(2)
    run_dir = Path(run)
    cases = {case.key: case for case in discover(Path(data_root))}
    chosen = [cases[key] for key in held_out_training_keys(run_dir / "split.json")]
    images = torch.from_numpy(prepare(chosen).images).float().unsqueeze(1)
    inputs = to_network_input(images)
    checkpoint = torch.load(run_dir / "last.pt", map_location="cpu", weights_only=False)
    average = moving_average(EMTNet(Task.MULTITASK), 0.995)
    simulate_int8(average.module)
    average.load_state_dict(checkpoint["average"])
    simulation = average.module.eval()
    observe(simulation, False)
    with torch.no_grad():
        forms = {
            "simulation": (simulation(inputs).mask_logit > 0).numpy(),
            "float (best.pt)": (load_best(run_dir)(inputs).mask_logit > 0).numpy(),
        }
    forms["onnx float32"] = masks_of_session(run_dir / "emtnet.onnx", inputs.numpy())
    forms["onnx int8"] = masks_of_session(Path(int8_file), inputs.numpy())
    for (a, x), (b, y) in itertools.combinations(forms.items(), 2):
        print(json.dumps({"measure": "network-level mask agreement", "a": a, "b": b, "dice": mean_dice(x, y)}))


if __name__ == "__main__":
    main(*sys.argv[1:])
