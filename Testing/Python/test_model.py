"""EMT-Net and its single-task variants (paper Table 1, Fig. 1)."""

from __future__ import annotations

import pytest
import torch

from busassist.constants import IMAGE_SIZE
from busassist.training.model import (
    EMTNet,
    ExportWrapper,
    MobileNetV1Encoder,
    Task,
    count_parameters,
    example_input,
    strip_training_heads,
)


@pytest.fixture(scope="module", autouse=True)
def _few_threads():
    # A training run may be using the CPU; keep these forward passes light.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def batch() -> torch.Tensor:
    return torch.randn(2, 1, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize(
    "task,millions",
    [(Task.MULTITASK, 5.1), (Task.CLASSIFICATION, 3.8), (Task.SEGMENTATION, 4.5)],
)
def test_parameter_counts_match_table_1(task: Task, millions: float) -> None:
    count = count_parameters(EMTNet(task))
    assert count == pytest.approx(millions * 1e6, rel=0.05)


def test_parameter_counts_add_up() -> None:
    # EMT-Net = shared encoder + classifier head + segmentation head.
    encoder = count_parameters(MobileNetV1Encoder(1))
    multitask = count_parameters(EMTNet(Task.MULTITASK))
    clf = count_parameters(EMTNet(Task.CLASSIFICATION))
    sgm = count_parameters(EMTNet(Task.SEGMENTATION))
    assert multitask == clf + sgm - encoder
    # MobileNetV1 1.0 without its 1001-way head has about 3.2 M parameters.
    assert encoder == pytest.approx(3.2e6, rel=0.02)


def test_multitask_output_shapes(batch: torch.Tensor) -> None:
    network = EMTNet(Task.MULTITASK).eval()
    with torch.no_grad():
        out = network(batch)
    assert out.class_logit is not None and out.mask_logit is not None
    assert tuple(out.class_logit.shape) == (2, 1)
    assert tuple(out.mask_logit.shape) == (2, 1, IMAGE_SIZE, IMAGE_SIZE)
    assert torch.isfinite(out.class_logit).all() and torch.isfinite(out.mask_logit).all()


def test_single_clf_has_no_mask_head(batch: torch.Tensor) -> None:
    network = EMTNet(Task.CLASSIFICATION).eval()
    assert network.segmenter is None and network.classifier is not None
    with torch.no_grad():
        out = network(batch)
    assert out.mask_logit is None
    assert tuple(out.class_logit.shape) == (2, 1)


def test_single_sgm_has_no_class_head(batch: torch.Tensor) -> None:
    network = EMTNet(Task.SEGMENTATION).eval()
    assert network.classifier is None and network.segmenter is not None
    with torch.no_grad():
        out = network(batch)
    assert out.class_logit is None
    assert tuple(out.mask_logit.shape) == (2, 1, IMAGE_SIZE, IMAGE_SIZE)


def test_task_accepts_strings() -> None:
    assert EMTNet("single-clf").task is Task.CLASSIFICATION
    with pytest.raises(ValueError):
        EMTNet("both")


def test_encoder_skip_and_final_shapes(batch: torch.Tensor) -> None:
    encoder = MobileNetV1Encoder(1).eval()
    with torch.no_grad():
        skips, features = encoder(batch)
    assert [tuple(s.shape) for s in skips] == [(2, 64, 112, 112), (2, 128, 56, 56), (2, 256, 28, 28)]
    assert tuple(features.shape) == (2, 1024, 7, 7)
    assert encoder.out_channels == 1024


def test_a_relu6_encoder_bounds_every_activation_and_the_default_stays_relu(batch: torch.Tensor) -> None:
    from busassist.training.model import network_from_checkpoint

    loud = 50 * batch
    outputs = {}
    for activation in ("relu", "relu6"):
        encoder = MobileNetV1Encoder(1, activation).eval()
        torch.manual_seed(0)
        for module in encoder.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.data.uniform_(1.0, 4.0)  # trained-looking gains, so that some values pass 6
        with torch.no_grad():
            skips, features = encoder(loud)
        outputs[activation] = max(float(t.max()) for t in [*skips, features])
    assert outputs["relu6"] <= 6.0 < outputs["relu"]
    assert isinstance(EMTNet().encoder.stem[-1], torch.nn.ReLU)
    assert EMTNet().segmenter.head[2].__class__ is torch.nn.ReLU  # the decoder is ReLU either way
    assert EMTNet(encoder_activation="relu6").segmenter.head[2].__class__ is torch.nn.ReLU
    old = {"task": "emtnet", "model": {}}  # a checkpoint written before the activation was recorded
    assert network_from_checkpoint(old).encoder.activation == "relu"
    assert network_from_checkpoint({**old, "encoder_activation": "relu6"}).encoder.activation == "relu6"
    with pytest.raises(ValueError, match="encoder activation 'gelu'"):
        EMTNet(encoder_activation="gelu")


def test_encoder_rgb_input() -> None:
    encoder = MobileNetV1Encoder(3).eval()
    assert encoder.stem[1].weight.shape[1] == 3  # after the (0, 1, 0, 1) zero pad
    with torch.no_grad():
        _, features = encoder(torch.zeros(1, 3, IMAGE_SIZE, IMAGE_SIZE))
    assert tuple(features.shape) == (1, 1024, 7, 7)


def test_stride_two_uses_tf_same_padding() -> None:
    # TF 'SAME' for a 3x3 stride-2 conv on an even input pads one pixel at the bottom/right only.
    encoder = MobileNetV1Encoder(1)
    pad = encoder.stem[0]
    assert isinstance(pad, torch.nn.ZeroPad2d)
    assert tuple(pad.padding) == (0, 1, 0, 1)


def test_export_wrapper_returns_both_logits() -> None:
    wrapper = ExportWrapper(EMTNet(Task.MULTITASK)).eval()
    with torch.no_grad():
        class_logit, mask_logit = wrapper(example_input(1))
    assert tuple(class_logit.shape) == (1, 1)
    assert tuple(mask_logit.shape) == (1, 1, IMAGE_SIZE, IMAGE_SIZE)


@pytest.mark.parametrize("task", [Task.CLASSIFICATION, Task.SEGMENTATION])
def test_export_wrapper_refuses_single_task_network(task: Task) -> None:
    with pytest.raises(ValueError):
        ExportWrapper(EMTNet(task))


def test_deep_supervision_heads_speak_only_while_training() -> None:
    from busassist.training.losses import deep_supervision_loss

    network = EMTNet(deep_supervision=True).train()
    images = torch.randn(2, 1, 64, 64)
    out = network(images)
    assert [tuple(a.shape[-2:]) for a in out.aux_mask_logits] == [(4, 4), (8, 8), (16, 16), (32, 32)]
    loss, _ = deep_supervision_loss(out.aux_mask_logits, torch.ones(2, 1, 64, 64), mask_bce=1.0)
    loss.backward()
    assert all(float(head.weight.grad.abs().sum()) > 0 for head in network.segmenter.aux)
    network.eval()
    with torch.no_grad():
        plain = network(images)
    assert plain.aux_mask_logits == []
    without = EMTNet().eval()
    without.load_state_dict(strip_training_heads(network.state_dict()))
    with torch.no_grad():
        torch.testing.assert_close(without(images).mask_logit, plain.mask_logit)
