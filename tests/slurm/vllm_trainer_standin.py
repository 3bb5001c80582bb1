"""Stand-in for the training ranks of a `rl submit --vllm-server-node` job (tests/slurm/test_vllm_node.py).

Why a stand-in: slurm/train.sbatch adds `--use_vllm true --vllm_mode server --vllm_server_host ADDR` to the
trainer's arguments, and the real `rl train` would then need vLLM (its weight sync is NCCL), which cannot run
here. What the job must get right is what this checks from where a rank runs: the arguments it was given,
and that the server's /health answers at http://<--vllm_server_host>:<recipe vllm_server_port>/health from
this (training) node.

It runs as `python -m tests.slurm.vllm_trainer_standin train --config RECIPE ...` under `accelerate launch`
on each training node, prints one `stand-in trainer:` line (to the job's log) and writes
<output_dir>/vllm-trainer-standin-<node>.json: node, argv, host, url, HTTP status and body. Exit 0 only if
/health answered 200. Imports no trl (the job's PYTHONPATH shadows it with tests/slurm/vllm_standin).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.request
from pathlib import Path

import yaml


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("command")
    p.add_argument("--config", required=True)
    p.add_argument("--use_vllm")
    p.add_argument("--vllm_mode")
    p.add_argument("--vllm_server_host")
    args, _ = p.parse_known_args()
    recipe = yaml.safe_load(Path(args.config).read_text(encoding="utf-8"))
    node = os.environ.get("SLURMD_NODENAME", "?")
    url = f"http://{args.vllm_server_host}:{recipe.get('vllm_server_port', 8000)}/health"
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            status, body = resp.status, resp.read().decode()
    except OSError as exc:
        status, body = None, repr(exc)
    record = {"node": node, "argv": sys.argv[1:], "use_vllm": args.use_vllm, "vllm_mode": args.vllm_mode,
              "host": args.vllm_server_host, "url": url, "status": status, "body": body}
    out = Path(recipe["output_dir"])
    out.mkdir(parents=True, exist_ok=True)
    (out / f"vllm-trainer-standin-{node}.json").write_text(json.dumps(record), encoding="utf-8")
    print(f"stand-in trainer: on {node}, GET {url} -> {status} {body}", flush=True)
    return 0 if status == 200 else 1


if __name__ == "__main__":
    raise SystemExit(main())
