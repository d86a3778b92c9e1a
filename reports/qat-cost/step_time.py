"""What quantisation inside a whole training would cost per step on this CPU: one training step (batch 16,
224 px, forward + backward + Adam) of EMT-Net as trained, and with qat.simulate_int8's rounding (7-bit
weights, uint8 activations and input), median of 8 steps after 2 warm-ups, 2 threads. Random inputs: only
the time is measured.

    python reports/qat-cost/step_time.py
"""

from __future__ import annotations

import json
import time

import numpy as np
import torch

from busassist.training.machine import cpu_description
from busassist.training.model import EMTNet
from busassist.training.qat import simulate_int8


def step_seconds(network: torch.nn.Module, steps: int = 8, warm: int = 2) -> float:
    network.train()
    optimiser = torch.optim.Adam([p for p in network.parameters() if p.requires_grad], lr=1e-4)
    images = torch.randn(16, 1, 224, 224).contiguous(memory_format=torch.channels_last)
    masks = (torch.rand(16, 1, 224, 224) > 0.8).float()
    labels = torch.randint(0, 2, (16,)).float()
    times = []
    for index in range(warm + steps):
        started = time.perf_counter()
        out = network(images)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(out.mask_logit, masks)
        loss = loss + torch.nn.functional.binary_cross_entropy_with_logits(out.class_logit.reshape(-1), labels)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        if index >= warm:
            times.append(time.perf_counter() - started)
    return float(np.median(times))


def main() -> None:
    torch.set_num_threads(2)
    torch.manual_seed(0)
    plain = step_seconds(EMTNet())
    rounded_network = EMTNet()
    simulate_int8(rounded_network)
    rounded = step_seconds(rounded_network)
    print(
        json.dumps(
            {
                "cpu": cpu_description(),
                "threads": 2,
                "step_s_plain": round(plain, 3),
                "step_s_rounded": round(rounded, 3),
                "ratio": round(rounded / plain, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
