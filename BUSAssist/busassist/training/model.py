"""EMT-Net (Shi et al.): MobileNetV1 encoder, classifier head and LinkNet-style decoder.

One builder makes the three networks of the paper's Table 1: EMT-Net (both heads),
Single-CLF (classifier only) and Single-SGM (segmentation only). Stride-2 convolutions pad
(0, 1, 0, 1) like TensorFlow's SAME padding, so the ported ImageNet weights see exactly the
pixels they were trained on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

import torch
import torch.nn.functional as F
from torch import nn

from busassist.constants import IMAGE_SIZE

#: (output channels, stride) of MobileNetV1's 13 depthwise-separable blocks.
MOBILENET_V1_BLOCKS: tuple[tuple[int, int], ...] = (
    (64, 1),
    (128, 2),
    (128, 1),
    (256, 2),
    (256, 1),
    (512, 2),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (1024, 2),
    (1024, 1),
)
#: Index (into MOBILENET_V1_BLOCKS) of the blocks whose outputs feed the decoder skips:
#: 112x112x64, 56x56x128 and 28x28x256 (paper Fig. 1a).
SKIP_BLOCKS: tuple[int, int, int] = (0, 2, 4)
BN_EPSILON = 1e-3  # TF-slim MobileNetV1 batch-norm epsilon


class Task(str, Enum):
    """Which heads a network has (paper Table 1)."""

    MULTITASK = "emtnet"
    CLASSIFICATION = "single-clf"
    SEGMENTATION = "single-sgm"


#: The encoder's activation: "relu" (the shipped models), or "relu6" = min(max(x, 0), 6), the activation of
#: the TF-slim MobileNetV1 whose ImageNet weights are in ../shared/data/pretrained (27 Relu6 nodes in its
#: graph; the MobileNetV1 paper itself says ReLU). Bounded activations give an int8 model a fixed, narrow
#: range per tensor instead of one set by rare outliers; MobileNetV2 (Sandler et al. 2018) chose ReLU6 "because
#: of its robustness when used with low-precision computation" (reports/int8-relu6).
ENCODER_ACTIVATIONS = ("relu", "relu6")
DEFAULT_ENCODER_ACTIVATION = ENCODER_ACTIVATIONS[0]


def activation_module(name: str) -> nn.Module:
    if name not in ENCODER_ACTIVATIONS:
        raise ValueError(f"encoder activation {name!r}: choose one of {', '.join(ENCODER_ACTIVATIONS)}")
    return nn.ReLU6(inplace=True) if name == "relu6" else nn.ReLU(inplace=True)


class ConvBNReLU(nn.Sequential):
    """Convolution + batch norm + ReLU (or ReLU6) with TF 'SAME' padding for stride 2."""

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel: int,
        stride: int,
        groups: int = 1,
        activation: str = DEFAULT_ENCODER_ACTIVATION,
    ) -> None:
        layers: list[nn.Module] = []
        if kernel == 3 and stride == 2:
            layers.append(nn.ZeroPad2d((0, 1, 0, 1)))
            padding = 0
        else:
            padding = kernel // 2
        layers += [
            nn.Conv2d(cin, cout, kernel, stride, padding, groups=groups, bias=False),
            nn.BatchNorm2d(cout, eps=BN_EPSILON),
            activation_module(activation),
        ]
        super().__init__(*layers)


class DepthwiseSeparable(nn.Sequential):
    """MobileNetV1 DS Conv block (paper Fig. 1b): 3x3 depthwise then 1x1 pointwise."""

    def __init__(self, cin: int, cout: int, stride: int, activation: str = DEFAULT_ENCODER_ACTIVATION) -> None:
        super().__init__(
            ConvBNReLU(cin, cin, 3, stride, groups=cin, activation=activation),
            ConvBNReLU(cin, cout, 1, 1, activation=activation),
        )


class MobileNetV1Encoder(nn.Module):
    """MobileNetV1 1.0 convolutional layers; returns the skip features and the 1/32 map."""

    def __init__(self, in_channels: int = 1, activation: str = DEFAULT_ENCODER_ACTIVATION) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.activation = activation
        self.stem = ConvBNReLU(in_channels, 32, 3, 2, activation=activation)
        blocks = []
        cin = 32
        for cout, stride in MOBILENET_V1_BLOCKS:
            blocks.append(DepthwiseSeparable(cin, cout, stride, activation))
            cin = cout
        self.blocks = nn.ModuleList(blocks)
        self.out_channels = cin

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        skips = []
        x = self.stem(x)
        for index, block in enumerate(self.blocks):
            x = block(x)
            if index in SKIP_BLOCKS:
                skips.append(x)
        return skips, x


class ConvolutionLinear(nn.Linear):
    """``nn.Linear`` computed as a 1x1 convolution, except in ONNX export (a plain ``Gemm`` there).

    Why: PyTorch sends a linear layer to Intel MKL, whose kernels on AMD CPUs ignore every pin and sum
    in another order, so a training would not give the same weights on Intel and AMD. A 1x1
    convolution runs in oneDNN, which honours the pin (training/reproducible.py). Same parameters,
    same checkpoints; the products differ from ``F.linear`` only by rounding.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.onnx.is_in_onnx_export():
            return super().forward(x)
        return F.conv2d(x[:, :, None, None], self.weight[:, :, None, None], self.bias)[:, :, 0, 0]


class ClassifierHead(nn.Module):
    """GAP -> FC 512 + ReLU -> Dropout 0.5 -> FC 128 + ReLU -> FC 1 (a logit)."""

    def __init__(self, in_channels: int = 1024, dropout: float = 0.5) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            ConvolutionLinear(in_channels, 512),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            ConvolutionLinear(512, 128),
            nn.ReLU(inplace=True),
            ConvolutionLinear(128, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class LinkNetDecoderBlock(nn.Sequential):
    """LinkNet decoder block (paper Fig. 1c): 1x1 conv, 3x3 stride-2 transposed conv, 1x1 conv."""

    def __init__(self, cin: int, cout: int) -> None:
        mid = cin // 4
        super().__init__(
            nn.Conv2d(cin, mid, 1, bias=False),
            nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
            nn.ConvTranspose2d(mid, mid, 3, stride=2, padding=1, output_padding=1, bias=False),
            nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        )


class SegmentationHead(nn.Module):
    """Four decoder blocks from 7x7x1024 with additive skips, then a head to a full-size logit."""

    def __init__(self, deep_supervision: bool = False) -> None:
        super().__init__()
        self.decoders = nn.ModuleList(
            [
                LinkNetDecoderBlock(1024, 512),  # 7 -> 14 (Fig. 1a has no skip at 14x14x512)
                LinkNetDecoderBlock(512, 256),  # 14 -> 28, + 28x28x256
                LinkNetDecoderBlock(256, 128),  # 28 -> 56, + 56x56x128
                LinkNetDecoderBlock(128, 64),  # 56 -> 112, + 112x112x64
            ]
        )
        self.head = nn.Sequential(
            nn.ConvTranspose2d(64, 32, 3, stride=2, padding=1, output_padding=1, bias=False),
            nn.BatchNorm2d(32),
            nn.ReLU(inplace=True),
            nn.Conv2d(32, 1, 3, padding=1),
        )

        # Deep supervision (Zhang et al., "hybrid deep supervision", ../shared/papers): a 1x1 conv
        # per decoder level turns its features into a coarse mask logit, supervised during training
        # only. The heads are not part of the shipped network: ``strip_training_heads`` drops them.
        self.aux = (
            nn.ModuleList([nn.Conv2d(channels, 1, 1) for channels in (512, 256, 128, 64)]) if deep_supervision else None
        )

    def forward(self, skips: list[torch.Tensor], x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The full-size mask logit, and the coarse per-level logits while deep supervision trains."""
        supervise = self.aux is not None and self.training
        x = self.decoders[0](x)
        levels = [x] if supervise else []  # kept only when supervised: inference keeps no extra maps
        for decoder, skip in zip(self.decoders[1:], reversed(skips)):
            x = decoder(x) + skip
            if supervise:
                levels.append(x)
        aux = [head(level) for head, level in zip(self.aux, levels)] if supervise else []
        return self.head(x), aux


@dataclass
class NetworkOutput:
    """Logits of the heads a network has (None for a head it lacks)."""

    class_logit: torch.Tensor | None
    mask_logit: torch.Tensor | None
    aux_mask_logits: list[torch.Tensor] = field(default_factory=list)  # deep supervision, training only


class EMTNet(nn.Module):
    """EMT-Net and its single-task variants, selected by ``task``."""

    def __init__(
        self,
        task: Task = Task.MULTITASK,
        in_channels: int = 1,
        dropout: float = 0.5,
        deep_supervision: bool = False,
        encoder_activation: str = DEFAULT_ENCODER_ACTIVATION,
    ):
        super().__init__()
        self.task = Task(task)
        self.encoder = MobileNetV1Encoder(in_channels, encoder_activation)
        has_clf = self.task in (Task.MULTITASK, Task.CLASSIFICATION)
        has_sgm = self.task in (Task.MULTITASK, Task.SEGMENTATION)
        self.classifier = ClassifierHead(self.encoder.out_channels, dropout) if has_clf else None
        self.segmenter = SegmentationHead(deep_supervision) if has_sgm else None

    def forward(self, x: torch.Tensor) -> NetworkOutput:
        skips, features = self.encoder(x)
        class_logit = self.classifier(features) if self.classifier is not None else None
        if self.segmenter is None:
            return NetworkOutput(class_logit, None)
        mask_logit, aux = self.segmenter(skips, features)
        return NetworkOutput(class_logit, mask_logit, aux)


def network_from_checkpoint(checkpoint: dict) -> EMTNet:
    """An empty network of the shape a saved checkpoint holds (task and encoder activation; checkpoints
    written before the activation was recorded are "relu")."""
    return EMTNet(Task(checkpoint["task"]), encoder_activation=encoder_activation_of(checkpoint))


def encoder_activation_of(checkpoint: dict) -> str:
    """The encoder activation a checkpoint was trained with (files written before it was recorded: ReLU)."""
    return checkpoint.get("encoder_activation", DEFAULT_ENCODER_ACTIVATION)


class ExportWrapper(nn.Module):
    """Tuple-returning view of a multitask network for ONNX export and latency benchmarks."""

    def __init__(self, network: EMTNet) -> None:
        super().__init__()
        if network.task is not Task.MULTITASK:
            raise ValueError("only the multitask EMT-Net is exported")
        self.network = network

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.network(x)
        assert out.class_logit is not None and out.mask_logit is not None
        return out.class_logit, out.mask_logit


def strip_training_heads(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A checkpoint's weights without the deep-supervision heads, which only training uses."""
    return {k: v for k, v in state_dict.items() if not k.startswith("segmenter.aux.")}


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters (what the paper's Table 1 reports)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def example_input(batch: int = 1, size: int = IMAGE_SIZE) -> torch.Tensor:
    return torch.zeros(batch, 1, size, size)
