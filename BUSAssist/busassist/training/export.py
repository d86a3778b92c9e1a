"""Export a trained EMT-Net to ONNX (opset 17) with the metadata inference relies on."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import onnx
import torch

from busassist.constants import (
    IMAGE_SIZE,
    MODEL_FILENAME,
    ONNX_CLASS_OUTPUT,
    ONNX_INPUT,
    ONNX_MASK_OUTPUT,
)
from busassist.core.model_store import ModelMetadata
from busassist.training.busi import split_seed
from busassist.training.graph_rewrite import GRAPH_FORM, fast_form
from busassist.training.model import EMTNet, ExportWrapper

OPSET = 17


def export_onnx(
    network: EMTNet, path: Path, metadata: ModelMetadata, size: int = IMAGE_SIZE, fast: bool = True
) -> Path:
    """Write ``network`` as ONNX with a dynamic batch axis and ``metadata`` as metadata_props.

    ``fast`` (the default, what ships) applies the exact graph rewrites of ``graph_rewrite``; ``False``
    keeps the exporter's own graph, which the parity tests compare it with.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The wrapper must be in eval mode too: the exporter restores the wrapper's mode afterwards,
    # which would otherwise switch the caller's network back to training.
    wrapper = ExportWrapper(network.cpu().eval()).eval()
    example = torch.zeros(1, 1, size, size)
    torch.onnx.export(
        wrapper,
        (example,),
        str(path),
        dynamo=False,
        opset_version=OPSET,
        input_names=[ONNX_INPUT],
        output_names=[ONNX_CLASS_OUTPUT, ONNX_MASK_OUTPUT],
        dynamic_axes={ONNX_INPUT: {0: "batch"}, ONNX_CLASS_OUTPUT: {0: "batch"}, ONNX_MASK_OUTPUT: {0: "batch"}},
        do_constant_folding=True,
    )
    if fast:
        onnx.save(fast_form(onnx.load(str(path))), str(path))
        metadata = dataclasses.replace(metadata, extra={**metadata.extra, "graph_form": GRAPH_FORM})
    else:  # metadata copied from a fast-form model must not claim a form this file does not have
        metadata = dataclasses.replace(
            metadata, extra={key: value for key, value in metadata.extra.items() if key != "graph_form"}
        )
    set_metadata(path, metadata)
    return path


def set_metadata(path: Path, metadata: ModelMetadata) -> None:
    """Replace the model's BUSAssist metadata_props (other keys are kept)."""
    model = onnx.load(str(path))
    properties = {p.key: p.value for p in model.metadata_props if not p.key.startswith("busassist.")}
    properties.update(metadata.to_properties())
    del model.metadata_props[:]
    for key, value in sorted(properties.items()):
        model.metadata_props.add(key=key, value=value)
    model.producer_name = "busassist"
    onnx.save(model, str(path))


def export_run(run: Path, exporter_graph: Path | None = None) -> Path:
    """Export ``run/best.pt`` to ``run/emtnet.onnx`` with the training weights in its metadata.

    ``exporter_graph``: write the exporter's own graph there instead (not the fast form, nothing in the
    run changes): what ``tools equalize`` and ``tools quantize`` read (``make int8``).
    """
    from busassist.training.trainer import load_best

    run = Path(run)
    config = json.loads((run / "config.json").read_text())
    train_config = config["config"]
    network = load_best(run)
    weights = hashlib.sha256()
    for name, tensor in sorted(network.state_dict().items()):
        weights.update(name.encode())
        weights.update(tensor.detach().cpu().numpy().tobytes())
    metadata = ModelMetadata(
        # data and weights both name the model: a retrain on the same data is a new version
        model_version=f"emtnet-busi-{config['data_sha256'][:8]}-{weights.hexdigest()[:8]}",
        w_p=train_config["w_p"],
        w_clf=train_config["w_clf"],
        input_size=train_config["image_size"],
        extra={"data_sha256": config["data_sha256"], "split_seed": split_seed(train_config)},
    )
    if exporter_graph is not None:
        return export_onnx(network, Path(exporter_graph), metadata, train_config["image_size"], fast=False)
    return export_onnx(network, run / MODEL_FILENAME, metadata, train_config["image_size"])


def rewrite_to_fast_form(path: Path) -> Path:
    """Rewrite an already exported model in place into the fast graph form, answers unchanged.

    For a model whose training checkpoint is not at hand (the bundled one predates the rewrite). The
    metadata keeps its model version (the weights and answers are the same model) and gains
    ``graph_form`` and ``source_sha256``, the checksum of the file it was rewritten from; the ``.sha256``
    file beside it is renewed.
    """
    from busassist.core.model_store import read_metadata, sha256_of

    path = Path(path)
    source_sha256 = sha256_of(path)
    metadata = read_metadata(path)
    if metadata.extra.get("graph_form") == GRAPH_FORM:
        return path
    onnx.save(fast_form(onnx.load(str(path))), str(path))
    extra = {**metadata.extra, "graph_form": GRAPH_FORM, "source_sha256": source_sha256}
    set_metadata(path, dataclasses.replace(metadata, extra=extra))
    seal_model(path)
    return path


def seal_model(path: Path) -> str:
    """Seal a finished model: its ``.sha256`` file, then onnxruntime's probe answers keyed by that digest.

    Every step that writes a model users may load ends here (calibrate, quantize, publish, the fast-form
    rewrite), so a shipped model always carries the reference the ``auto`` backend checks against.
    Returns the SHA-256.
    """
    from busassist.core.backends import write_probe_reference
    from busassist.core.model_store import write_checksum

    digest = write_checksum(Path(path))
    write_probe_reference(Path(path), digest)
    return digest
