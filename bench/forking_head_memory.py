"""Cause of the forking-mask memory regression at vocab 151,936: the selective head's weight gradient.

    .venv/bin/python bench/forking_head_memory.py

SmolLM2 shape (hidden 576) at vocab 151,936, 205 kept rows (20% of 8 x 128): peak RSS (kernel VmHWM
above the starting RSS) and wall time of the selective head's forward + backward, two ways:
`autograd`: each row chunk under activation checkpointing, autograd summing every chunk's own
(V, H) weight gradient (the code before the fix; forced here with a no-op forward hook, which makes
rl/train/selective_head.py use its generic path); `fused`: `_LinearHeadLogps`, one in-place (V, H)
float32 accumulator. Second of two repetitions is printed (the first warms the allocator).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # peak_memory: the shared RSS meter

import torch  # noqa: E402
from peak_memory import PeakRSS  # noqa: E402

from rl.train.selective_head import selected_logps  # noqa: E402

VOCAB, HIDDEN, ROWS = 151936, 576, 205


def measure(mode: str) -> tuple[float, float]:
    torch.manual_seed(0)
    head = torch.nn.Linear(HIDDEN, VOCAB, bias=False)
    if mode == "autograd":
        head.register_forward_hook(lambda m, a, o: None)
    backbone = torch.nn.Linear(HIDDEN, HIDDEN)
    x, t = torch.randn(ROWS, HIDDEN), torch.randint(0, VOCAB, (ROWS,))
    meter = PeakRSS()
    for _ in range(2):
        head.zero_grad(set_to_none=True)
        backbone.zero_grad(set_to_none=True)
        meter.start()
        t0 = time.perf_counter()
        selected_logps(head, backbone(x), t, 1.0).sum().backward()
        elapsed, peak = time.perf_counter() - t0, meter.stop() / 2**20
    return peak, elapsed


def main() -> int:
    torch.set_num_threads(1)
    print(f"one (V, H) float32 tensor = {VOCAB * HIDDEN * 4 / 2**20:.0f} MiB")
    for mode in ("autograd", "fused"):
        peak, elapsed = measure(mode)
        print(f"{mode:<9} peak above start {peak:6.0f} MiB  time {elapsed:6.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
