"""Write ``fixtures/export_reference.json``: what a model answers on the sample study and the BUSI test split.

Run it on the exporter's own graph of the bundled weights (``python Testing/Python/make_export_reference.py
FILE``; without FILE, the bundled model), so that ``test_bundled_model.py`` can hold the bundled fast-form
file to that graph's answers: class logits and sampled mask logits within 1e-4, and masks equal bit for
bit (a SHA-256 of each packed 224 x 224 mask). For the model of a training run, FILE comes from
``busassist-train export RUN --exporter-graph FILE``; for the earlier bundled model it was the file before
its rewrite. Regenerating it from the fast-form file would make that test compare the model with itself;
the fixture records the model version (a hash of the weights) and the graph form it was made from, and the
test checks both.

The inputs go through the deployed pipeline (``Analyzer.analyze``: region crop, shared preprocessing); only
the network's outputs are recorded.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT / "BUSAssist"))

from busassist.core.inference import Analyzer  # noqa: E402
from busassist.core.io import iter_frames, read_image_file  # noqa: E402
from busassist.core.model_store import default_model_path, sha256_of  # noqa: E402

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "export_reference.json"
SAMPLE_DIR = REPO_ROOT / "Resources" / "SampleData"
BUSI_ROOT = REPO_ROOT / ".." / "shared" / "data" / "busi"
SAMPLED_PIXELS = 32  #: mask logits recorded per input, at positions drawn with the input's index as seed


class RecordingAnalyzer(Analyzer):
    """The deployed analyzer, remembering the raw network outputs of its last call."""

    def run_logits(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.last = super().run_logits(batch)
        return self.last


def mask_digest(mask_logit: np.ndarray) -> str:
    """SHA-256 of the packed binary mask (logit >= 0 is probability >= 0.5, the mask threshold)."""
    return hashlib.sha256(np.packbits(mask_logit >= 0).tobytes()).hexdigest()


def sampled_positions(index: int, size: int) -> np.ndarray:
    return np.random.default_rng(index).integers(0, size, (SAMPLED_PIXELS, 2))


def reference_inputs() -> list[tuple[str, object]]:
    """(name, Frame) for the three sample DICOMs and the BUSI test split (when ../shared is present)."""
    inputs: list[tuple[str, object]] = []
    for path in sorted(SAMPLE_DIR.glob("*.dcm")):
        frame = next(iter_frames(path))
        inputs.append((f"sample/{path.name}", frame))
    if BUSI_ROOT.is_dir():
        from busassist.training.busi import discover, near_duplicate_groups, stratified_group_split

        cases = discover(BUSI_ROOT)
        groups = near_duplicate_groups(BUSI_ROOT / "near_duplicates.json")
        test = stratified_group_split(cases, groups)[2]
        for index in test:
            inputs.append((f"busi/{cases[index].key}", read_image_file(cases[index].image_path)))
    return inputs


def outputs(analyzer: RecordingAnalyzer, name: str, frame: object, index: int) -> dict:
    analyzer.analyze(frame)
    class_logit, mask_logit = analyzer.last
    rows, cols = sampled_positions(index, mask_logit.shape[-1]).T
    return {
        "name": name,
        "class_logit": float(class_logit[0]),
        "mask_sha256": mask_digest(mask_logit[0]),
        "mask_pixels": int(np.count_nonzero(mask_logit[0] >= 0)),
        "sampled_mask_logits": [round(float(v), 6) for v in mask_logit[0][rows, cols]],
    }


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    model = Path(args[0]) if args else default_model_path()
    analyzer = RecordingAnalyzer(model, threads=2, verify=not args)  # an exporter graph has no .sha256 beside it
    records = [outputs(analyzer, name, frame, i) for i, (name, frame) in enumerate(reference_inputs())]
    FIXTURE.parent.mkdir(exist_ok=True)
    payload = {
        "model_sha256": sha256_of(model),
        "model_version": analyzer.metadata.model_version,
        "graph_form": analyzer.metadata.extra.get("graph_form", "exporter"),
        "inputs": records,
    }
    lines = [json.dumps(record) for record in records]  # one input per line: reviewable diffs
    header = json.dumps({key: value for key, value in payload.items() if key != "inputs"})[:-1]
    FIXTURE.write_text(header + ', "inputs": [\n' + ",\n".join(lines) + "\n]}\n")
    print(f"{FIXTURE}: {len(records)} inputs from {model} ({payload['model_sha256'][:12]})")


if __name__ == "__main__":
    main()
