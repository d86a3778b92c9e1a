"""The bundled model (Resources/Models/emtnet.onnx) on the bundled sample study, through the CLI.

These tests FAIL, not skip, when the bundled model or its checksum is missing: shipping without
a model is a release bug, not a reason to skip.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image

from busassist.apps.cli import main
from busassist.constants import IMAGE_SIZE, MASK_THRESHOLD, NORMALISATION_MEAN, NORMALISATION_STD, W_P
from busassist.core.inference import Analyzer, Decision
from busassist.core.model_store import checksum_path, default_model_path

REPO_ROOT = Path(__file__).resolve().parents[2]
SAMPLE_DIR = REPO_ROOT / "Resources" / "SampleData"


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_bundled_model_present_and_verified() -> None:
    model = default_model_path()
    assert model.is_file(), f"bundled model {model} is missing"
    assert checksum_path(model).is_file(), f"{checksum_path(model)} is missing"
    analyzer = Analyzer(threads=1)  # verifies the SHA-256
    assert analyzer.model_path == model
    metadata = analyzer.metadata
    assert metadata.model_version not in ("", "unversioned", "test")
    # The model must have been trained with the preprocessing inference applies.
    assert metadata.input_size == IMAGE_SIZE
    assert metadata.normalisation_mean == NORMALISATION_MEAN
    assert metadata.normalisation_std == NORMALISATION_STD
    assert metadata.mask_threshold == MASK_THRESHOLD
    assert metadata.w_p == W_P
    assert analyzer.threshold(None) == pytest.approx(0.5)


def check_bundled_int8(int8: Path) -> None:
    """The int8 form a release bundles: sealed, 7-bit, its own card naming the shipped float32 model as its
    parent, and admitted by the rule on the card's own figures (AUC and Dice within 0.005 of float32)."""
    analyzer = Analyzer("int8", threads=1)  # verifies its SHA-256
    default = Analyzer(threads=1)
    assert analyzer.model_path == int8 and analyzer.metadata.model_version.endswith("-int8")
    assert analyzer.metadata.extra["quantization"]["reduce_range"] is True  # 7-bit: no saturation without VNNI
    assert analyzer.metadata.operating_table and analyzer.metadata.operating_table != default.metadata.operating_table
    card = json.loads((int8.parent / "model_card.json").read_text())
    parent = json.loads((default_model_path().parent / "model_card.json").read_text())
    assert card["model"]["derived_from"]["version"] == default.metadata.model_version == parent["model"]["version"]
    assert card["model"]["version"] == analyzer.metadata.model_version
    assert card["data"]["sha256"] == parent["data"]["sha256"]
    for part in ("test", "validation"):
        for metric in ("auc", "dice"):
            assert card[part][metric]["value"] >= parent[part][metric]["value"] - 0.005, (part, metric)


def test_int8_by_name_is_the_int8_form_of_the_default_or_refused_with_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--model int8`` never answers with another model than the int8 form of the shipped one: a release
    bundles that form only when it passed its rule (this one does not: reports/int8-98770c53), and asking
    for a form the release lacks is a one-line refusal naming the reason, in the core every face calls."""
    from busassist.core.model_store import ModelError, bundled_models_dir, resolve_model_path

    assert resolve_model_path(None) == resolve_model_path("fp32") == default_model_path()
    int8 = bundled_models_dir() / "int8" / "emtnet.onnx"
    if int8.is_file():
        assert resolve_model_path("int8") == int8
        check_bundled_int8(int8)
    else:
        assert not int8.parent.exists(), f"{int8.parent} holds a partial int8 model"
        with pytest.raises(
            ModelError, match=r"--model int8: no int8 model is bundled with this release.*use the default float32 model"
        ):
            Analyzer("int8", threads=1)
        sample = sorted(SAMPLE_DIR.glob("*.dcm"))[0]
        assert main(["analyze", str(sample), "--out", str(tmp_path / "out"), "--model", "int8"]) == 1
        error = capsys.readouterr().err.strip()
        assert error.startswith("busassist: --model int8: no int8 model") and "\n" not in error
        assert not (tmp_path / "out" / "results.csv").exists()
    # an existing file called int8 is that file, not the bundled model
    monkeypatch.chdir(tmp_path)
    (tmp_path / "int8").write_bytes(b"not a model")
    assert resolve_model_path("int8") == Path("int8")


def test_bundled_model_on_sample_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = default_model_path()
    assert model.is_file(), f"bundled model {model} is missing"
    samples = sorted(SAMPLE_DIR.glob("*.dcm"))
    assert len(samples) == 3
    provenance = json.loads((SAMPLE_DIR / "provenance.json").read_text())
    out = tmp_path / "out"

    code = main(["analyze", str(SAMPLE_DIR), "--out", str(out), "--threads", "1"])
    captured = capsys.readouterr()

    assert code == 0, captured.err
    assert "Traceback" not in captured.out + captured.err
    assert read_csv(out / "errors.csv") == []
    rows = read_csv(out / "results.csv")
    assert len(rows) == 3
    assert sorted(row["file"] for row in rows) == [str(p) for p in samples]
    for row in rows:
        path = Path(row["file"])
        header = pydicom.dcmread(path, stop_before_pixels=True)
        shape = (int(header.Rows), int(header.Columns))
        x0, y0, x1, y1 = provenance[path.name]["region_x0y0x1y1"]  # Max inclusive
        assert row["frame"] == "0"
        assert row["region"] == f"{x0},{y0},{x1 + 1},{y1 + 1}"
        with Image.open(out / row["mask_path"]) as image:
            mask = np.asarray(image)
        assert mask.shape == shape, f"{path.name}: mask {mask.shape} is not in the source geometry {shape}"
        assert set(np.unique(mask).tolist()) <= {0, 255}
        inside = np.zeros(shape, dtype=bool)
        inside[y0 : y1 + 1, x0 : x1 + 1] = True
        assert not mask[~inside].any(), f"{path.name}: lesion pixels outside the tissue region"
        assert int(row["mask_area_px"]) == int(np.count_nonzero(mask))
        with Image.open(out / row["overlay_path"]) as image:
            assert np.asarray(image).shape == (*shape, 3)
        probability, threshold = float(row["malignancy_probability"]), float(row["threshold"])
        assert 0.0 <= probability <= 1.0
        if row["lesion_detected"] == "0":
            assert row["decision"] == Decision.NO_LESION
        else:
            assert row["decision"] == (Decision.SUSPICIOUS if probability >= threshold else Decision.BENIGN)
        assert row["model_version"] not in ("", "unversioned", "test")


def test_the_model_files_facts_are_read_without_onnxruntime(tmp_path):
    """The panel reads W_p, the operating table and the lesion rule from the ONNX file before loading the model."""
    from busassist.core.inference import Analyzer
    from busassist.core.model_store import ModelError, default_model_path, read_metadata

    assert read_metadata(default_model_path()) == Analyzer(None).metadata
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"\xff\xff\xff\xff not protobuf")
    with pytest.raises(ModelError, match="not a readable ONNX model"):
        read_metadata(broken)


def test_bundled_model_answers_as_the_export_it_was_rewritten_from() -> None:
    """The fast graph form (issue 16) changes the file, not the model: same logits, the same mask pixels.

    ``fixtures/export_reference.json`` holds the answers of the exporter's own graph of the same weights
    on the sample study and the BUSI test split (``make_export_reference.py``); inputs whose BUSI file is
    absent here are skipped, the three sample frames always run.
    """
    import make_export_reference as reference

    fixture = json.loads(reference.FIXTURE.read_text())
    analyzer = reference.RecordingAnalyzer(threads=1)
    assert analyzer.metadata.model_version == fixture["model_version"], "fixture is of other weights"
    assert fixture.get("graph_form", "exporter") == "exporter", "a fast-form fixture compares it with itself"
    assert analyzer.metadata.extra.get("graph_form") not in (None, "exporter"), "the bundled model is the fast form"
    inputs = dict(reference.reference_inputs())
    names = [record["name"] for record in fixture["inputs"]]
    assert all(name in names for name in inputs), "inputs the fixture does not cover"
    checked = 0
    for index, record in enumerate(fixture["inputs"]):
        if record["name"] not in inputs:
            continue
        got = reference.outputs(analyzer, record["name"], inputs[record["name"]], index)
        assert abs(got["class_logit"] - record["class_logit"]) <= 1e-4, record["name"]
        np.testing.assert_allclose(got["sampled_mask_logits"], record["sampled_mask_logits"], atol=1e-4, rtol=0)
        assert got["mask_sha256"] == record["mask_sha256"], f"{record['name']}: a mask pixel flipped"
        checked += 1
    assert checked >= 3


@pytest.mark.parametrize("folder", [""] + (["int8"] if (REPO_ROOT / "Resources" / "Models" / "int8").exists() else []))
def test_the_shipped_cards_name_the_data_by_hash_not_by_a_path_of_the_training_machine(folder: str) -> None:
    """A card travels with the model to other machines: where the data lay on the trainer's is noise there
    (issue 17, item 4). The data are named by their SHA-256; the command uses the environment's variables.
    The Markdown card is the rendering of the JSON one, so the two cannot tell different stories."""
    from busassist.training.evaluate import MACHINE_PATHS
    from busassist.training.model_card import render_markdown

    models_dir = REPO_ROOT / "Resources" / "Models" / folder
    card = json.loads((models_dir / "model_card.json").read_text())
    text = json.dumps(card)
    assert "../" not in text and "shared/data" not in text
    assert not set(MACHINE_PATHS) & set(card["training"]["config"])
    assert '--data "$BUSASSIST_DATA"' in card["training"]["command"]
    assert len(card["data"]["sha256"]) == 64
    assert (models_dir / "MODEL_CARD.md").read_text() == render_markdown(card)
