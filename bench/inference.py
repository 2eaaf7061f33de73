"""Warm latency of the whole paint path on this machine: one 8.91 s clip -> log-mel -> embedding -> 9 images.

Prints the median of >= 20 warm runs, the FLOPs the networks need, a measured matmul GFLOP/s and the ratio
of the measured time to that FLOP limit (1.0 would be matmul speed). Uses the bundled weights when present,
else random weights of the same architecture (latency does not depend on the weight values).

    python bench/inference.py [--preset cpu|report] [--runs 30] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mvnet import audio  # noqa: E402
from mvnet.models import PRESETS, example_inputs, flops_per_item  # noqa: E402
from mvnet.pipeline import MVNet, WeightsError, untrained  # noqa: E402


def matmul_gflops(n: int = 1024, repeats: int = 20) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default=None,
                        help="time random weights of this preset instead of the bundled weights")
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--n", type=int, default=9)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    if args.preset:
        model, source = untrained(PRESETS[args.preset], device="cpu"), f"random weights, preset {args.preset}"
    else:
        try:
            model, source = MVNet.from_pretrained(device="cpu"), "bundled weights"
        except WeightsError:
            model, source = untrained(device="cpu"), "random weights, preset cpu (no bundled weights yet)"

    sr = audio.SAMPLE_RATE
    t = np.arange(audio.CLIP_SAMPLES) / sr
    clip = (0.3 * np.sin(2 * np.pi * 220 * t) * np.sin(2 * np.pi * 0.7 * t)).astype(np.float32)

    def once():
        embedding = model.embed((sr, clip))
        model.era_scores(embedding)
        return model.paint(embedding, n=args.n, seed=0)

    for _ in range(3):
        once()
    times = []
    for _ in range(args.runs):
        start = time.perf_counter()
        once()
        times.append(time.perf_counter() - start)

    # The networks' FLOPs (the STFT and mel projection are small and not counted).
    configs = model.configs
    enc = flops_per_item(model.encoder, *example_inputs("encoder", configs))
    gen = flops_per_item(model.generator, *example_inputs("generator", configs))
    total = enc + args.n * gen
    gflops = matmul_gflops()
    median = statistics.median(times)
    limit = total / (gflops * 1e9)
    print(f"model: {source}; torch threads: {torch.get_num_threads()}; device: cpu")
    print(f"warm latency, 1 clip -> {args.n} images: median {median * 1000:.1f} ms, "
          f"p10 {np.percentile(times, 10) * 1000:.1f} ms, p90 {np.percentile(times, 90) * 1000:.1f} ms ({args.runs} runs)")
    print(f"FLOPs: encoder {enc / 1e9:.3f} G + {args.n} x generator {gen / 1e9:.3f} G = {total / 1e9:.2f} GFLOP")
    print(f"matmul speed: {gflops:.0f} GFLOP/s -> FLOP limit {limit * 1000:.1f} ms; "
          f"measured / limit = {median / limit:.1f}x")


if __name__ == "__main__":
    main()
