"""Stand-in for `trl vllm-serve` (`python -m trl.cli.main vllm-serve --model M [--port P] ...`), the vLLM
boundary of tests/slurm/test_vllm_node.py: it answers GET /health (and /health/, the route TRL 1.16's server
has) with 200 and a JSON body naming the node and pid that answered, on `--host` (default 0.0.0.0, as
vllm-serve's) and `--port` (default 8000, as vllm-serve's), in the network namespace of the node srun put it on.

What it prints goes to the job's server log (slurm/train.sbatch redirects the step there): its command line,
node and pid first, one line per request, and a last line if SIGTERM/SIGINT stops it. (When the job's script
stops the server, by killing the server's srun, srun cancels the step and the task is SIGKILLed: no last
line, but srun's "forcing job termination" in the same log. SIGTERM is what Slurm's own clean-up at the
job's end sends, i.e. what a server the script forgot to stop would get.)

VLLM_STANDIN_SILENT=1 in its environment: it never listens (the health wait must give up after
vllm_server_timeout with one line naming this log), but keeps running until stopped.
Standard library only: nothing here may import the real trl.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PREFIX = "stand-in vllm-serve"


def say(text: str) -> None:
    print(f"{PREFIX}: {text}", flush=True)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] != "vllm-serve":
        say(f"only `vllm-serve` is stood in for, got {argv[:1]}")
        return 2
    p = argparse.ArgumentParser(prog="trl vllm-serve (stand-in)")
    p.add_argument("--model", required=True)
    p.add_argument("--host", default="0.0.0.0")
    p.add_argument("--port", type=int, default=8000)
    args, _ = p.parse_known_args(argv[1:])  # the other flags are TRL's (checked in tests/rl/train/test_vllm_serve.py)
    node, pid = os.environ.get("SLURMD_NODENAME", "?"), os.getpid()
    say(f"node {node} pid {pid} argv {json.dumps(argv)}")

    def stop(signum, _frame):
        say(f"{signal.Signals(signum).name}, stopping")
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if os.environ.get("VLLM_STANDIN_SILENT") == "1":
        say("VLLM_STANDIN_SILENT=1: not answering")
        while True:
            time.sleep(3600)

    class Health(BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path.rstrip("/") != "/health":
                self.send_error(404)
                return
            body = json.dumps({"standin": True, "node": node, "pid": pid}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, fmt, *fmt_args):
            say(f"{self.client_address[0]} {fmt % fmt_args}")

    server = ThreadingHTTPServer((args.host, args.port), Health)
    say(f"listening on {args.host}:{args.port}")
    server.serve_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
