"""The job's wait for the vLLM server of `rl submit --vllm-server-node` (slurm/train.sbatch runs it).

`wait_for_health` (also `python -m rl.launch.vllm_server --url ... --timeout ... --log ... [--pid ...]`)
polls the server's `/health` (the endpoint TRL 1.16's `VLLMClient.check_server` polls) until it answers
200, the server process exits, or the timeout (the recipe's `vllm_server_timeout`) passes; a failure is
one line that names the server's own log file. What the server is started with: rl/train/vllm_serve.py.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence

from rl.errors import UserError
from rl.train.vllm_serve import DEFAULT_TIMEOUT


def wait_for_health(url: str, timeout: float, log: str, *, alive: Callable[[], bool] | None = None,
                    interval: float = 2.0, clock: Callable[[], float] = time.monotonic) -> float:
    """Poll `url` until it answers HTTP 200; returns the seconds waited.

    UserError in one line naming `log` when `timeout` seconds pass first, or as soon as `alive()` says the
    server process is gone (no point waiting out the timeout for a server that crashed while loading).
    """
    start = clock()
    last = "no answer yet"
    while True:
        try:
            with urllib.request.urlopen(url, timeout=min(max(interval, 1.0), 10.0)) as resp:
                if resp.status == 200:
                    return clock() - start
                last = f"HTTP {resp.status}"
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}"
        except (urllib.error.URLError, OSError) as exc:
            last = str(getattr(exc, "reason", exc)) or exc.__class__.__name__
        if alive is not None and not alive():
            raise UserError(f"vLLM server exited before {url} answered; see its log {log}")
        waited = clock() - start
        if waited >= timeout:
            raise UserError(f"vLLM server not healthy at {url} after {timeout:g} s (last: {last}); see its log {log} "
                            "(raise vllm_server_timeout if the model is still loading)")
        time.sleep(min(interval, max(timeout - waited, 0.0)))


def _pid_alive(pid: int) -> Callable[[], bool]:
    def alive() -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    return alive


def main(argv: Sequence[str] | None = None) -> int:
    """The job's wait (slurm/train.sbatch): exit 0 once healthy, else one `error:` line and exit 1."""
    p = argparse.ArgumentParser(prog="python -m rl.launch.vllm_server",
                                description="wait for a vLLM server's health endpoint")
    p.add_argument("--url", required=True, help="the health endpoint, e.g. http://HOST:8000/health")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds before giving up")
    p.add_argument("--log", required=True, help="the server's log file, named in the failure line")
    p.add_argument("--pid", type=int, help="the server's (srun's) process id: stop waiting when it exits")
    p.add_argument("--interval", type=float, default=2.0, help="seconds between polls")
    args = p.parse_args(argv)
    try:
        waited = wait_for_health(args.url, args.timeout, args.log, interval=args.interval,
                                 alive=_pid_alive(args.pid) if args.pid else None)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"vLLM server healthy at {args.url} after {waited:.0f} s (log: {args.log})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
