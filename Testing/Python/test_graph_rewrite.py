"""The exact graph rewrites (sub-pixel transposed convolutions, the head folded into the phase grid).

Three levels: the weight mapping against PyTorch's own ``conv_transpose2d`` / ``conv2d`` on random tensors;
a one-layer graph with a batch norm to fold; and the whole exported EMT-Net (the ``emtnet_onnx`` session
fixture, exported in fast form) against the exporter's plain graph and the PyTorch network.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.register_assert_rewrite("model_fixtures")
onnx = pytest.importorskip("onnx")
torch = pytest.importorskip("torch")

import onnxruntime as ort  # noqa: E402
from model_fixtures import FixtureModel, network_batch, sample_frames  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from busassist.core.model_store import ModelMetadata, read_metadata  # noqa: E402
from busassist.training.export import export_onnx  # noqa: E402
from busassist.training.graph_rewrite import (  # noqa: E402
    GRAPH_FORM,
    fast_form,
    fold_convs_into_phases,
    interleave_weights,
    phase_domain_kernel,
    subpixel_transposed_convs,
    subpixel_weights,
)

pytest_plugins = ["model_fixtures"]


def run(model: onnx.ModelProto, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, inputs)


def interleave(phases: np.ndarray) -> np.ndarray:
    """numpy reference of the grouped stride-2 scatter: (N, 4C, H, W), channel c*4+p -> (N, C, 2H, 2W)."""
    n, channels, height, width = phases.shape
    out = np.zeros((n, channels // 4, 2 * height, 2 * width), phases.dtype)
    for phase in range(4):
        out[:, :, phase // 2 :: 2, phase % 2 :: 2] = phases[:, phase::4]
    return out


def test_subpixel_weights_reproduce_conv_transpose() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 5, 6, 7)).astype(np.float32)
    weights = rng.normal(size=(5, 3, 3, 3)).astype(np.float32)
    expected = torch.nn.functional.conv_transpose2d(
        torch.from_numpy(x), torch.from_numpy(weights), stride=2, padding=1, output_padding=1
    ).numpy()
    phase_major = subpixel_weights(weights.astype(np.float64))  # channel p * C + c
    padded = torch.nn.functional.pad(torch.from_numpy(x).double(), (0, 1, 0, 1))
    phases = torch.nn.functional.conv2d(padded, torch.from_numpy(phase_major)).numpy()
    channel_major = phases.reshape(2, 4, 3, 6, 7).swapaxes(1, 2).reshape(2, 12, 6, 7)
    np.testing.assert_allclose(interleave(channel_major), expected, atol=1e-5)


def test_phase_domain_kernel_reproduces_full_resolution_conv() -> None:
    rng = np.random.default_rng(2)
    full = rng.normal(size=(1, 3, 10, 12))
    kernel = rng.normal(size=(2, 3, 3, 3))
    expected = torch.nn.functional.conv2d(torch.from_numpy(full), torch.from_numpy(kernel), padding=1).numpy()
    # full -> phase grid (channel c * 4 + p), then the folded kernel, then back
    phases = np.stack([full[:, :, p // 2 :: 2, p % 2 :: 2] for p in range(4)], axis=2).reshape(1, 12, 5, 6)
    folded = torch.nn.functional.conv2d(
        torch.from_numpy(phases), torch.from_numpy(phase_domain_kernel(kernel)), padding=1
    ).numpy()
    np.testing.assert_allclose(interleave(folded), expected, atol=1e-9)


def test_interleave_weights_place_each_phase_once() -> None:
    weights = interleave_weights(3)
    assert weights.shape == (12, 1, 2, 2)
    assert weights.sum() == 12 and set(np.unique(weights)) == {0.0, 1.0}


def transposed_conv_graph(**attributes) -> onnx.ModelProto:
    """x -> ConvTranspose(3x3) -> BatchNormalization -> Relu -> y, with random weights and statistics."""
    rng = np.random.default_rng(3)
    channels = 4
    tensors = {
        "w": rng.normal(size=(channels, channels, 3, 3)),
        "gamma": rng.uniform(0.5, 2, channels),
        "beta": rng.normal(size=channels),
        "mean": rng.normal(size=channels),
        "var": rng.uniform(0.5, 2, channels),
    }
    settings = {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "output_padding": [1, 1]}
    settings.update(attributes)
    nodes = [
        helper.make_node("ConvTranspose", ["x", "w"], ["t"], name="up", **settings),
        helper.make_node("BatchNormalization", ["t", "gamma", "beta", "mean", "var"], ["b"], epsilon=1e-3),
        helper.make_node("Relu", ["b"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "one-layer",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, channels, 5, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, channels, 10, 12])],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in tensors.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_one_layer_with_batch_norm_folded() -> None:
    model = transposed_conv_graph()
    rewritten, count = subpixel_transposed_convs(model)
    assert count == 1
    ops = [node.op_type for node in rewritten.graph.node]
    assert "BatchNormalization" not in ops and ops.count("ConvTranspose") == 1  # the exact interleave only
    x = {"x": np.random.default_rng(4).normal(size=(1, 4, 5, 6)).astype(np.float32)}
    np.testing.assert_allclose(run(rewritten, x)[0], run(model, x)[0], atol=1e-5)


def test_other_transposed_convolutions_are_left_alone() -> None:
    model = transposed_conv_graph(kernel_shape=[3, 3], strides=[2, 2], pads=[0, 0, 0, 0], output_padding=[0, 0])
    rewritten, count = subpixel_transposed_convs(model)
    assert count == 0
    assert [node.op_type for node in rewritten.graph.node] == [node.op_type for node in model.graph.node]


@pytest.fixture(scope="module")
def plain_and_fast(emtnet_onnx: FixtureModel, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("forms")
    plain = export_onnx(emtnet_onnx.network, folder / "plain.onnx", ModelMetadata(model_version="test"), fast=False)
    return plain, emtnet_onnx.path


def test_export_writes_the_fast_form(plain_and_fast: tuple[Path, Path]) -> None:
    plain, fast = plain_and_fast
    plain_ops = [node.op_type for node in onnx.load(str(plain)).graph.node]
    fast_model = onnx.load(str(fast))
    fast_ops = [node.op_type for node in fast_model.graph.node]
    assert plain_ops.count("ConvTranspose") == 5 and plain_ops.count("BatchNormalization") == 5
    assert "BatchNormalization" not in fast_ops
    for node in fast_model.graph.node:  # the only transposed convolutions left are the exact 2x2 interleaves
        if node.op_type == "ConvTranspose":
            assert [a.ints for a in node.attribute if a.name == "kernel_shape"] == [[2, 2]]
    assert read_metadata(fast).extra["graph_form"] == GRAPH_FORM
    assert "graph_form" not in read_metadata(plain).extra
    # rewriting again changes nothing: the form is a fixed point
    again = fast_form(fast_model)
    assert [n.op_type for n in again.graph.node] == fast_ops
    assert fold_convs_into_phases(fast_model)[1] == 0


def test_fast_form_answers_as_the_plain_export_and_pytorch(
    plain_and_fast: tuple[Path, Path], emtnet_onnx: FixtureModel
) -> None:
    batch = network_batch(sample_frames())
    fast, plain = (run(onnx.load(str(path)), {"image": batch}) for path in reversed(plain_and_fast))
    # against the exporter's own graph: the rewrite changes only the order of float additions
    assert np.abs(fast[0] - plain[0]).max() <= 1e-4
    assert np.abs(fast[1] - plain[1]).max() <= 1e-4
    assert np.array_equal(fast[1] >= 0, plain[1] >= 0), "a mask pixel flipped"
    # against PyTorch: onnxruntime and PyTorch already differ by float rounding (up to ~3e-4 on this
    # untrained network's logits, a pixel at the boundary); the fast form may not add to that.
    with torch.no_grad():
        reference = emtnet_onnx.network(torch.from_numpy(batch))
    for ours, exported, theirs in zip(fast, plain, (reference.class_logit.numpy(), reference.mask_logit.numpy())):
        assert np.abs(ours - theirs).max() <= np.abs(exported - theirs).max() + 1e-5
    assert np.count_nonzero((fast[1] >= 0) != (reference.mask_logit.numpy() >= 0)) <= np.count_nonzero(
        (plain[1] >= 0) != (reference.mask_logit.numpy() >= 0)
    )


def test_rewriting_an_exported_file_in_place_keeps_its_version_and_names_its_source(
    plain_and_fast: tuple[Path, Path], tmp_path: Path
) -> None:
    """``export.rewrite_to_fast_form``: how the bundled model (no checkpoint at hand) got its fast form."""
    import shutil

    from busassist.core.model_store import sha256_of, verify_model, write_checksum
    from busassist.training.export import rewrite_to_fast_form

    plain, fast = plain_and_fast
    path = tmp_path / "emtnet.onnx"
    shutil.copyfile(plain, path)
    write_checksum(path)
    source = sha256_of(path)
    rewrite_to_fast_form(path)
    verify_model(path)  # the checksum file was renewed
    metadata = read_metadata(path)
    assert metadata.model_version == read_metadata(plain).model_version
    assert metadata.extra["graph_form"] == GRAPH_FORM and metadata.extra["source_sha256"] == source
    assert [n.op_type for n in onnx.load(str(path)).graph.node] == [n.op_type for n in onnx.load(str(fast)).graph.node]
    rewritten = sha256_of(path)
    rewrite_to_fast_form(path)  # a file already in the fast form is left alone
    assert sha256_of(path) == rewritten
