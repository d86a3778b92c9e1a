"""``busassist-train fit`` with quantisation noise in every ReLU while training (PLAN.md of this folder).

    python reports/int8-noise-training/fit_with_noise.py FIT_ARGUMENTS...

Every ``nn.ReLU`` and ``nn.ReLU6`` output gains uniform noise of one uint8 step of its own batch range,
``(U(0, 1) - 0.5) * max / 255``, while the module trains with gradients on (Fan et al. 2020, "Training with
quantization noise for extreme model compression"): what onnxruntime's per-tensor uint8 rounding does to
an activation, drawn afresh each step, so that the float32 mask border learns not to move under it. Nothing
changes at evaluation, export or in the shipped network; the arguments go to the CLI unchanged.
"""

from __future__ import annotations

import sys

from busassist.training.reproducible import flush_subnormals, pin_arithmetic

pin_arithmetic()  # as busassist-train does, before PyTorch loads: the shipped recipe's arithmetic
flush_subnormals()

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402, N812
from torch import nn  # noqa: E402

from busassist.training.cli import main  # noqa: E402

UINT8_STEPS = 255


def _with_noise(activation):  # noqa: ANN001, ANN202
    def forward(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
        y = activation(self, x)
        if self.training and torch.is_grad_enabled():
            step = y.detach().amax() / UINT8_STEPS
            y = y + (torch.rand_like(y) - 0.5) * step
        return y

    return forward


def relu(self: nn.ReLU, x: torch.Tensor) -> torch.Tensor:
    return F.relu(x, inplace=self.inplace)


def relu6(self: nn.ReLU6, x: torch.Tensor) -> torch.Tensor:
    return F.hardtanh(x, 0.0, 6.0, self.inplace)


if __name__ == "__main__":
    nn.ReLU.forward = _with_noise(relu)
    nn.ReLU6.forward = _with_noise(relu6)
    sys.exit(main(sys.argv[1:]))
