"""Cause of the forking-mask memory regression at vocab 151,936: the selective head's weight gradient.

    .venv/bin/python -m bench.forking_head_memory [--smoke]

SmolLM2 shape (hidden 576) at vocab 151,936, 205 kept rows (20% of 8 x 128): peak RSS (kernel VmHWM
above the starting RSS) and wall time of the selective head's forward + backward, two ways:
`autograd`: each row chunk under activation checkpointing, autograd summing every chunk's own
(V, H) weight gradient (the code before the fix; forced here with a no-op forward hook, which makes
rl/train/selective_head.py use its generic path); `fused`: `_LinearHeadLogps`, one in-place (V, H)
float32 accumulator. Second of two repetitions is printed (the first warms the allocator).
`--smoke`: the same two measurements at vocab 4,096, hidden 64, 32 rows (seconds).

The last line is `forking_head_memory: autograd_mib=A fused_mib=F` (peaks above start).
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from bench.peak_memory import PeakRSS
from rl.train.selective_head import selected_logps

SHAPE = (151936, 576, 205)  # vocab, hidden, kept rows
SMOKE_SHAPE = (4096, 64, 32)


def measure(mode: str, shape: tuple[int, int, int] = SHAPE) -> tuple[float, float]:
    vocab, hidden, rows = shape
    torch.manual_seed(0)
    head = torch.nn.Linear(hidden, vocab, bias=False)
    if mode == "autograd":
        head.register_forward_hook(lambda m, a, o: None)
    backbone = torch.nn.Linear(hidden, hidden)
    x, t = torch.randn(rows, hidden), torch.randint(0, vocab, (rows,))
    meter = PeakRSS()
    for _ in range(2):
        head.zero_grad(set_to_none=True)
        backbone.zero_grad(set_to_none=True)
        meter.start()
        t0 = time.perf_counter()
        selected_logps(head, backbone(x), t, 1.0).sum().backward()
        elapsed, peak = time.perf_counter() - t0, meter.stop() / 2**20
    return peak, elapsed


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--smoke", action="store_true", help="a small head (seconds): checks that the bench runs")
    args = p.parse_args(argv)
    shape = SMOKE_SHAPE if args.smoke else SHAPE
    vocab, hidden, rows = shape
    torch.set_num_threads(1)
    print(f"vocab {vocab:,}, hidden {hidden}, {rows} rows; one (V, H) float32 tensor = "
          f"{vocab * hidden * 4 / 2**20:.0f} MiB")
    peaks = {}
    for mode in ("autograd", "fused"):
        peak, elapsed = measure(mode, shape)
        peaks[mode] = peak
        print(f"{mode:<9} peak above start {peak:6.0f} MiB  time {elapsed:6.2f} s")
    print(f"forking_head_memory: autograd_mib={peaks['autograd']:.0f} fused_mib={peaks['fused']:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
