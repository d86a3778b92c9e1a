"""Where the bundled model lives, its SHA-256 check, and the metadata it carries.

The model ships in ``Resources/Models`` of the source tree (what Slicer sees through its module
path) and, in a pip installation, as package data ``busassist/models`` (pyproject maps the same
folder there). A model is only loaded after its SHA-256 matches the ``.sha256`` file beside it,
so a corrupted or swapped file is refused before it can produce a score.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from busassist.constants import (
    IMAGE_SIZE,
    MASK_THRESHOLD,
    MIN_LESION_FRACTION,
    MODEL_FILENAME,
    NORMALISATION_MEAN,
    NORMALISATION_STD,
    W_CLF,
    W_P,
)


class ModelError(Exception):
    """The model file is missing, corrupted or not a BUSAssist model; message names the file."""


def bundled_models_dir() -> Path:
    """Resources/Models in a source checkout, else the installed ``busassist/models`` data."""
    package = Path(__file__).resolve().parents[1]
    source_tree = package.parents[1] / "Resources" / "Models"
    if (source_tree / MODEL_FILENAME).exists():
        return source_tree
    return package / "models"


def default_model_path() -> Path:
    return bundled_models_dir() / MODEL_FILENAME


#: Bundled models by name (``--model int8``): float32, the default, and its int8 form (docs/benchmarks.md).
#: A release bundles the int8 form only when it passes its rule against the float32 model it ships with;
#: asking for a form the release does not hold is refused with the reason, never answered by another model.
BUNDLED_MODELS = {"fp32": "", "int8": "int8"}

#: Why a named form may be missing from a release (docs/training.md#quantisation).
NOT_BUNDLED_REASON = {
    "int8": "no int8 model is bundled with this release: no int8 form of the shipped model passes the rule "
    "(AUC and Dice within 0.005 of float32); use the default float32 model (docs/training.md#quantisation)",
}


def resolve_model_path(model: str | Path | None) -> Path:
    """The model file for a path, a bundled model's name (``fp32``, ``int8``) or None (the default).

    An existing file always wins over a name, so a file called ``int8`` is still that file. A name whose
    model this release does not bundle raises ``ModelError`` saying why.
    """
    if model is None or str(model) == "":
        return default_model_path()
    path = Path(model)
    if not path.exists() and str(model) in BUNDLED_MODELS:
        bundled = bundled_models_dir() / BUNDLED_MODELS[str(model)] / MODEL_FILENAME
        if not bundled.is_file():
            reason = NOT_BUNDLED_REASON.get(str(model), f"no {model} model is bundled with this release")
            raise ModelError(f"--model {model}: {reason}")
        return bundled
    return path


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def checksum_path(model_path: Path) -> Path:
    return model_path.with_name(model_path.name + ".sha256")


def write_checksum(model_path: Path) -> str:
    digest = sha256_of(model_path)
    checksum_path(model_path).write_text(f"{digest}  {model_path.name}\n")
    return digest


def verify_model(model_path: Path) -> str:
    """Return the model's SHA-256 after checking it against its ``.sha256`` file."""
    model_path = Path(model_path)
    if not model_path.is_file():
        raise ModelError(f"{model_path}: model file not found")
    expected_file = checksum_path(model_path)
    if not expected_file.is_file():
        raise ModelError(f"{model_path}: no {expected_file.name} beside it, refusing an unverified model")
    expected = expected_file.read_text().split()[0].strip().lower()
    actual = sha256_of(model_path)
    if actual != expected:
        raise ModelError(
            f"{model_path}: SHA-256 {actual[:12]}… does not match {expected[:12]}… (file corrupted or replaced)"
        )
    return actual


def model_label(version: str, model_path: Path | None = None, sha256: str | None = None) -> str:
    """What a face names the model by: its version and the start of its SHA-256.

    The SHA-256 is the verified one when the model is loaded, else the one recorded beside the file.
    """
    if not sha256:
        try:
            sha256 = checksum_path(Path(model_path) if model_path else default_model_path()).read_text().split()[0]
        except (OSError, IndexError):
            sha256 = None
    return f"Model {version}" + (f", SHA-256 {sha256[:12]}" if sha256 else "")


#: ModelProto field numbers (onnx/onnx.proto): metadata_props = 14, StringStringEntryProto key = 1, value = 2.
_ONNX_METADATA_PROPS, _ENTRY_KEY, _ENTRY_VALUE = 14, 1, 2


def read_metadata(model_path: Path) -> ModelMetadata:
    """The model's own facts (W_p, operating table, lesion rule, version) read from the ONNX file itself.

    A protobuf scan of the file's top-level fields: no onnxruntime and no onnx package, so a panel
    can show the model's operating table before the model is loaded. ``ModelError`` when the file
    is not a readable ONNX model.
    """
    from busassist.core.protobuf import ProtobufFormatError, iter_fields

    try:
        data = memoryview(Path(model_path).read_bytes())
        properties = {}
        for field_number, wire, value in iter_fields(data):
            if field_number == _ONNX_METADATA_PROPS and wire == 2:
                entry = {f: bytes(v).decode("utf-8") for f, w, v in iter_fields(value) if w == 2}
                properties[entry.get(_ENTRY_KEY, "")] = entry.get(_ENTRY_VALUE, "")
    except (OSError, ProtobufFormatError, UnicodeDecodeError) as error:
        raise ModelError(f"{model_path}: not a readable ONNX model ({error.__class__.__name__})") from None
    return ModelMetadata.from_properties(properties)


@dataclass
class ModelMetadata:
    """What the exported model says about itself (ONNX metadata_props, JSON values)."""

    model_version: str = "unversioned"
    w_p: float = W_P
    w_clf: float = W_CLF
    input_size: int = IMAGE_SIZE
    normalisation_mean: float = NORMALISATION_MEAN
    normalisation_std: float = NORMALISATION_STD
    mask_threshold: float = MASK_THRESHOLD
    # Smallest mask area (fraction of the analysed region) reported as a lesion. A property of the
    # model so that a team can ship a larger one; export writes the sensitivity-first default
    # (see training/evaluate.lesion_rule), and older models without it read the same default.
    min_lesion_fraction: float = MIN_LESION_FRACTION
    temperature: float = 1.0
    operating_table: list[dict] = field(default_factory=list)
    extra: dict = field(default_factory=dict)

    @property
    def quantized(self) -> bool:
        """An int8 model: ``tools quantize`` records how it was made in ``extra["quantization"]``."""
        return "quantization" in self.extra

    @classmethod
    def from_properties(cls, properties: dict[str, str]) -> ModelMetadata:
        values = {}
        known = set(cls.__dataclass_fields__) - {"extra"}
        extra = {}
        for key, raw in properties.items():
            name = key.removeprefix("busassist.")
            try:
                value = json.loads(raw)
            except (json.JSONDecodeError, TypeError):
                value = raw
            if name in known:
                values[name] = value
            else:
                extra[name] = value
        return cls(**values, extra=extra)

    def to_properties(self) -> dict[str, str]:
        out = {f"busassist.{k}": json.dumps(v) for k, v in self.__dict__.items() if k != "extra"}
        out.update({f"busassist.{k}": json.dumps(v) for k, v in self.extra.items()})
        return out
