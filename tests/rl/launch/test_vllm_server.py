"""rl/launch/vllm_server.py: the job's wait for the vLLM server's /health, against a stand-in HTTP process
(python's http.server answering /health): success, timeout and a dead server, each failure one line naming the log."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from rl.errors import UserError
from rl.launch.vllm_server import main, wait_for_health


# A stand-in for the vLLM server: answers /health with 503 for its first `UNHEALTHY` requests, then 200;
# prints its port once listening.
STAND_IN = r"""
import http.server, sys
unhealthy = int(sys.argv[1])
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        global unhealthy
        ok = self.path == "/health" and unhealthy <= 0
        unhealthy -= 1
        self.send_response(200 if ok else 503); self.end_headers()
    def log_message(self, *a): pass
s = http.server.HTTPServer(("127.0.0.1", 0), H)
print(s.server_address[1], flush=True)
s.serve_forever()
"""


@pytest.fixture
def stand_in():
    procs = []

    def start(unhealthy: int) -> tuple[subprocess.Popen, str]:
        proc = subprocess.Popen([sys.executable, "-c", STAND_IN, str(unhealthy)], stdout=subprocess.PIPE, text=True)
        procs.append(proc)
        return proc, f"http://127.0.0.1:{proc.stdout.readline().strip()}/health"

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


def test_wait_returns_once_the_server_answers(stand_in):
    proc, url = stand_in(unhealthy=2)
    waited = wait_for_health(url, timeout=20, log="/x/vllm.log", interval=0.05, alive=lambda: proc.poll() is None)
    assert 0 <= waited < 20


def test_wait_times_out_in_one_line_naming_the_log(stand_in):
    _, url = stand_in(unhealthy=10**6)
    start = time.monotonic()
    with pytest.raises(UserError) as info:
        wait_for_health(url, timeout=0.5, log="/runs/x/slurm/vllm-7.log", interval=0.05)
    assert time.monotonic() - start < 5
    msg = str(info.value)
    assert "\n" not in msg and "not healthy" in msg and "HTTP 503" in msg and "/runs/x/slurm/vllm-7.log" in msg


def test_wait_stops_early_when_the_server_process_died(stand_in):
    proc, url = stand_in(unhealthy=10**6)
    proc.kill()
    proc.wait()
    start = time.monotonic()
    with pytest.raises(UserError, match=r"vLLM server exited before .* see its log /l/vllm.log"):
        wait_for_health(url, timeout=60, log="/l/vllm.log", interval=0.05, alive=lambda: proc.poll() is None)
    assert time.monotonic() - start < 5


def test_command_line_exit_status_and_one_error_line(stand_in, capsys):
    proc, url = stand_in(unhealthy=1)
    assert main(["--url", url, "--timeout", "20", "--log", "/l/v.log", "--interval", "0.05",
                 "--pid", str(proc.pid)]) == 0
    assert "healthy" in capsys.readouterr().out
    assert main(["--url", "http://127.0.0.1:9/health", "--timeout", "0.2", "--log", "/l/v.log",
                 "--interval", "0.05"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: vLLM server not healthy") and "\n" not in err and "/l/v.log" in err
