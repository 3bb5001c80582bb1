"""Run `rl ARGS` in this process with a fault injected (for subprocess fault tests).

    python -m tests.faults.worker --kill-at 2 --point weights -- train --config R.yaml
    python -m tests.faults.worker --fsize-after 1 -- train --config R.yaml

--kill-at N --point P: SIGKILL this process while checkpoint-N is being saved:
    weights    half of model.safetensors written (the rest never arrives)
    optimizer  half of optimizer.pt written
    marker     everything written by the trainer, COMPLETE marker not yet written
--fsize-after N: once checkpoint-N is marked COMPLETE, limit the size of any file this process
    writes to 64 KiB (RLIMIT_FSIZE, SIGXFSZ ignored): the next write fails like a full disk (EFBIG).
"""

from __future__ import annotations

import argparse
import os
import resource
import signal
import sys


def _die() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def _truncate_half(path) -> None:
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(size // 2)
        f.flush()
        os.fsync(f.fileno())


def install_kill(step: int, point: str) -> None:
    target = f"checkpoint-{step}"
    if point == "weights":
        import transformers.modeling_utils as mu

        real = mu.safe_save_file

        def save_file(tensors, filename, *args, **kwargs):
            real(tensors, filename, *args, **kwargs)
            if target in str(filename):
                _truncate_half(filename)
                _die()

        mu.safe_save_file = save_file
    elif point == "optimizer":
        import torch

        real_save = torch.save

        def save(obj, f, *args, **kwargs):
            real_save(obj, f, *args, **kwargs)
            if isinstance(f, (str, os.PathLike)) and target in str(f) and str(f).endswith("optimizer.pt"):
                _truncate_half(f)
                _die()

        torch.save = save
    elif point == "marker":
        import rl.runtime.checkpoint as ck

        real_marker = ck.write_complete_marker

        def write_complete_marker(ckpt_dir, **kwargs):
            if str(ckpt_dir).rstrip("/").endswith(target):
                _die()
            return real_marker(ckpt_dir, **kwargs)

        ck.write_complete_marker = write_complete_marker
    else:
        raise SystemExit(f"unknown --point {point}")


def install_fsize_limit(after_step: int, limit: int = 64 * 1024) -> None:
    import rl.runtime.checkpoint as ck

    real_marker = ck.write_complete_marker

    def write_complete_marker(ckpt_dir, **kwargs):
        out = real_marker(ckpt_dir, **kwargs)
        if str(ckpt_dir).rstrip("/").endswith(f"checkpoint-{after_step}"):
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
        return out

    ck.write_complete_marker = write_complete_marker


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kill-at", type=int)
    parser.add_argument("--point", default="weights")
    parser.add_argument("--fsize-after", type=int)
    parser.add_argument("rl_args", nargs=argparse.REMAINDER)
    opts = parser.parse_args()
    if opts.kill_at is not None:
        install_kill(opts.kill_at, opts.point)
    if opts.fsize_after is not None:
        install_fsize_limit(opts.fsize_after)
    from rl.cli import main as rl_main

    args = opts.rl_args[1:] if opts.rl_args[:1] == ["--"] else opts.rl_args
    return rl_main(args)


if __name__ == "__main__":
    sys.exit(main())
