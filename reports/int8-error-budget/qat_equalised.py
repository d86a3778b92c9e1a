"""Search 5 of PLAN.md: ``tools qat``'s fine-tuning (``qat.fine_tune``) started from the *equalised* network.

    python reports/int8-error-budget/qat_equalised.py EXPORTER_GRAPH OUT DATA_ROOT [OBJECTIVE LEARNING_RATE]

``tools equalize`` writes the fast form, which cannot be read back, and the equalised network does not
survive a round trip through the exporter's graph (the folded transposed-convolution norms are named
differently). So this runs ``fine_tune`` in-process with the network it reads replaced by the equalised
one: ``network_from_onnx`` -> ``fold_transposed_norms`` -> ``equalise`` (4 rounds, as ``tools equalize``).
4 epochs; search 5: teacher objective at 2e-5 (search 3's settings), search 6: logits at 1e-5.
"""

from __future__ import annotations

import sys
from pathlib import Path

from busassist.training import onnx_weights, qat
from busassist.training.equalize import equalise


def main(model: str, out: str, data_root: str, objective: str = "teacher", learning_rate: str = "2e-5") -> None:
    read, fold = onnx_weights.network_from_onnx, onnx_weights.fold_transposed_norms

    def equalised(path: Path):  # noqa: ANN202
        network = read(path)
        fold(network)
        print("equalised:", equalise(network, 4)["pairs"], "pairs")
        return network

    onnx_weights.network_from_onnx = equalised
    onnx_weights.fold_transposed_norms = lambda network: None  # already folded above
    print(
        qat.fine_tune(
            Path(model), Path(out), Path(data_root), epochs=4, learning_rate=float(learning_rate), objective=objective
        )
    )


if __name__ == "__main__":
    main(*sys.argv[1:])
