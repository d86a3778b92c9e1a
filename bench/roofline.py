"""Is ``speedup_end_to_end >= 2.5`` reachable with an exact model on this CPU? A roofline bound.

Both pipelines share everything outside the network (decoding, preprocessing, measurements), so
with PyTorch's end-to-end time T, its network time N_t and the target ratio R, the exact network would
have to run in ``T / R - (T - N_t)`` milliseconds. An exact float32 network cannot do its
multiply-adds faster than the CPU's best float32 matrix product, measured here on the same threads
(a large ``torch.mm``, the best of several repeats). When the required rate exceeds that peak, no
exact rewrite or runtime reaches the target on this CPU; only fewer operations (a smaller model) or
cheaper ones (int8) can. The report also gives the share of that peak the network would need if
everything outside it cost nothing, beside the share each runtime reaches today.

Reads ``bench/results.json`` (``make bench``) for T and N_t; writes ``bench/roofline.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from busassist.constants import IMAGE_SIZE
from busassist.training.machine import cpu_description
from busassist.training.model import EMTNet, Task


def network_flops() -> float:
    """Floating-point operations of one EMT-Net forward pass (a multiply-add counts two)."""
    network = EMTNet(Task.MULTITASK).eval()
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        network(torch.zeros(1, 1, IMAGE_SIZE, IMAGE_SIZE))
    return float(counter.get_total_flops())


def matrix_product_gflops(threads: int, size: int = 2048, repeats: int = 15) -> float:
    """The best float32 rate a large matrix product reaches on ``threads`` threads (GFLOP/s)."""
    torch.set_num_threads(threads)
    a, b = torch.randn(size, size), torch.randn(size, size)
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - started)
    return 2 * size**3 / best / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=Path("bench/results.json"))
    parser.add_argument("--out", type=Path, default=Path("bench/roofline.json"))
    parser.add_argument("--target", type=float, default=2.5)
    args = parser.parse_args()
    results = json.loads(args.results.read_text())
    threads = int(results["threads"])
    torch_ms, torch_network_ms = results["torch_ms_p50"], results["torch_network_ms_p50"]
    outside_ms = torch_ms - torch_network_ms
    allowed_network_ms = torch_ms / args.target - outside_ms
    flops = network_flops()
    peak = matrix_product_gflops(threads)
    report = {
        **cpu_description(),
        "threads": threads,
        "network_gflop": flops / 1e9,
        "matrix_product_peak_gflops": peak,
        "network_ms_at_peak": flops / 1e9 / peak * 1e3,
        "torch_ms_p50": torch_ms,
        "outside_network_ms": outside_ms,
        "target_speedup": args.target,
        "allowed_network_ms": allowed_network_ms,
        "required_gflops": flops / 1e9 / (allowed_network_ms / 1e3) if allowed_network_ms > 0 else None,
        "best_reachable_speedup_exact": torch_ms / (outside_ms + flops / 1e9 / peak * 1e3),
        "results_date": results.get("date"),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    report["reachable"] = bool(report["required_gflops"] and report["required_gflops"] <= peak)
    # Even if decoding and post-processing cost nothing, the network alone would have to be R times
    # faster than PyTorch's: the share of the peak that needs, against what the runtimes reach today.
    report["peak_share_needed_if_outside_were_free"] = flops / 1e9 / (torch_network_ms / args.target / 1e3) / peak
    for name, key in (
        ("torch", "torch_network_ms_p50"),
        ("onnxruntime", "ort_network_ms_p50"),
        ("openvino", "openvino_network_ms_p50"),
    ):
        if results.get(key):
            report[f"peak_share_{name}"] = flops / 1e9 / (results[key] / 1e3) / peak
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
