"""Benchmark the embedding nets: cost per training and per inference sample.

For each net (the paper's CNN, the default ResNet embedding, and the default
wrapped in the D4-invariance wrapper) at 32, 64 and 128 pixels with 5 channels,
we time training steps (forward + backward + Adam step, batch 64) and inference
(evaluation mode, no gradients, batch 64) on CPU with 2 threads. The nets are
timed in interleaved rounds, so load from other processes hits all nets alike.
Each figure is the fastest timed step (as `timeit` advises: slower steps are
slowed by other processes, not by the net); medians are reported alongside,
with the load average, because on a shared 2-core machine they can be far off.

Usage::

    python benchmarks/embeddings.py [--resolutions 32 64 128] [--steps 8]

A readable table, then, as the last line, one JSON object with the per-net
results under ``"results"`` and the training speedups of the default over the
paper's CNN at 64 and 128 pixels.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch
import torch.nn as nn
from sbi_exsitu.embeddings import build_embedding

__all__ = ["NETS", "main", "time_inference", "time_training"]

#: name -> build_embedding arguments (besides sizes).
NETS: dict[str, dict] = {
    "paper_cnn": {"name": "paper_cnn"},
    "default": {"name": "default"},
    "default+d4": {"name": "default", "invariant": True},
}

CHANNELS = 5
BATCH = 64
OUT_FEATURES = 32


def _step_trainer(net: nn.Module, x: torch.Tensor):
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)

    def step() -> float:
        net.train()
        start = time.perf_counter()
        optimizer.zero_grad()
        net(x).square().mean().backward()
        optimizer.step()
        return time.perf_counter() - start

    return step


def _step_inference(net: nn.Module, x: torch.Tensor):
    def step() -> float:
        net.eval()
        start = time.perf_counter()
        with torch.no_grad():
            net(x)
        return time.perf_counter() - start

    return step


def _interleaved(
    steps: dict, warmup: int, timed: int
) -> dict[str, tuple[float, float]]:
    """(fastest, median) seconds per step of each callable, interleaved rounds."""

    for step in steps.values():
        for _ in range(warmup):
            step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(timed):
        for name, step in steps.items():
            times[name].append(step())
    return {name: (min(t), statistics.median(t)) for name, t in times.items()}


def _per_sample_ms(
    times: dict[str, tuple[float, float]], batch: int
) -> dict[str, tuple[float, float]]:
    return {k: (1e3 * a / batch, 1e3 * b / batch) for k, (a, b) in times.items()}


def time_training(
    nets: dict[str, nn.Module], x: torch.Tensor, warmup: int, timed: int
) -> dict[str, tuple[float, float]]:
    """(fastest, median) milliseconds per training sample for each net."""

    steps = {name: _step_trainer(net, x) for name, net in nets.items()}
    return _per_sample_ms(_interleaved(steps, warmup, timed), len(x))


def time_inference(
    nets: dict[str, nn.Module], x: torch.Tensor, warmup: int, timed: int
) -> dict[str, tuple[float, float]]:
    """(fastest, median) milliseconds per inference sample for each net."""

    steps = {name: _step_inference(net, x) for name, net in nets.items()}
    return _per_sample_ms(_interleaved(steps, warmup, timed), len(x))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolutions", type=int, nargs="+", default=[32, 64, 128])
    parser.add_argument(
        "--steps", type=int, default=8, help="timed steps (halved at >= 128 px)"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    torch.set_num_threads(2)
    results = []
    header = f"{'net':<12} {'px':>4} {'train ms/sample':>16} {'infer ms/sample':>16}"
    print(header + f" {'params':>10}  (fastest step; medians in brackets)")
    for resolution in args.resolutions:
        torch.manual_seed(args.seed)
        nets = {
            label: build_embedding(
                **config,
                in_channels=CHANNELS,
                image_size=resolution,
                out_features=OUT_FEATURES,
            )
            for label, config in NETS.items()
        }
        x = torch.randn(BATCH, CHANNELS, resolution, resolution)
        # The paper's CNN takes ~1.5 s per step at 128 px: fewer steps there.
        timed = max(2, args.steps // 2) if resolution >= 128 else args.steps
        train = time_training(nets, x, warmup=2, timed=timed)
        infer = time_inference(nets, x, warmup=2, timed=timed)
        for label, net in nets.items():
            row = {
                "net": label,
                "resolution": resolution,
                "train_ms_per_sample": round(train[label][0], 4),
                "infer_ms_per_sample": round(infer[label][0], 4),
                "train_ms_per_sample_median": round(train[label][1], 4),
                "infer_ms_per_sample_median": round(infer[label][1], 4),
                "params": sum(p.numel() for p in net.parameters()),
            }
            results.append(row)
            print(
                f"{label:<12} {resolution:>4} {row['train_ms_per_sample']:>16.3f} "
                f"{row['infer_ms_per_sample']:>16.3f} {row['params']:>10} "
                f"(medians {row['train_ms_per_sample_median']:.3f}, "
                f"{row['infer_ms_per_sample_median']:.3f})",
                flush=True,
            )

    summary: dict = {
        "results": results,
        "threads": torch.get_num_threads(),
        "batch": BATCH,
        "torch": torch.__version__,
        # Above the core count, other processes competed for the CPU.
        "load_average_1min": round(os.getloadavg()[0], 2),
        "cpu_count": os.cpu_count(),
    }
    for resolution in (64, 128):
        cost = {
            r["net"]: r["train_ms_per_sample"]
            for r in results
            if r["resolution"] == resolution
        }
        if "paper_cnn" in cost:
            summary[f"speedup_default_vs_paper_{resolution}"] = round(
                cost["paper_cnn"] / cost["default"], 2
            )
            summary[f"speedup_default_d4_vs_paper_{resolution}"] = round(
                cost["paper_cnn"] / cost["default+d4"], 2
            )
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
