"""W&B unreachable or not logged in: training goes on, logging falls back to offline with one warning.
Every probe is a bounded TCP connect: nothing here can hang."""

from __future__ import annotations

import os
import socket
import time

import pytest

from rl.runtime.wandb_secrets import wandb_fallback
from tests.faults.helpers import run_cli, write_recipe

FAKE_KEY = "f" * 40


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once it is closed


@pytest.fixture
def silent_port():
    """A port that accepts connections and never answers (a blackholing firewall or proxy)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    yield s.getsockname()[1]
    s.close()


@pytest.fixture
def fake_wandb():
    """A local HTTP server answering W&B's viewer query: known key -> a viewer, else 401."""
    import json
    import threading
    from base64 import b64encode
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    good = "Basic " + b64encode(f"api:{FAKE_KEY}".encode()).decode()
    seen = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's naming
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            seen.append(self.path)
            ok = self.headers.get("Authorization") == good
            body = json.dumps({"data": {"viewer": {"id": "u1"}}}).encode()
            self.send_response(200 if ok else 401)
            self.send_header("Content-Length", str(len(body) if ok else 0))
            self.end_headers()
            if ok:
                self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", seen
    server.shutdown()
    server.server_close()


@pytest.fixture
def clean_env(tmp_path):
    """An environment with no W&B settings and no ~/.netrc."""
    return {"HOME": str(tmp_path), "NETRC": str(tmp_path / "no-netrc")}


def test_not_logged_in_goes_offline(clean_env, caplog):
    reason = wandb_fallback(["wandb"], clean_env)
    assert reason.startswith("not logged in") and clean_env["WANDB_MODE"] == "offline"
    assert sum("W&B" in r.getMessage() for r in caplog.records) == 1


def test_unreachable_server_goes_offline(clean_env):
    clean_env.update(WANDB_API_KEY=FAKE_KEY, WANDB_BASE_URL=f"http://127.0.0.1:{_closed_port()}")
    start = time.perf_counter()
    reason = wandb_fallback(["wandb"], clean_env, timeout=2.0)
    assert "unreachable" in reason and clean_env["WANDB_MODE"] == "offline"
    assert time.perf_counter() - start < 3


def test_slow_server_is_bounded_by_the_timeout(clean_env, monkeypatch):
    """A server that never answers: the probe waits `timeout` seconds once, then goes offline."""
    import rl.runtime.wandb_secrets

    seen = {}

    def never_answers(address, timeout=None):
        seen["timeout"] = timeout
        time.sleep(timeout)
        raise socket.timeout("timed out")

    monkeypatch.setattr(rl.runtime.wandb_secrets.socket, "create_connection", never_answers)
    clean_env.update(WANDB_API_KEY=FAKE_KEY, WANDB_BASE_URL="https://wandb.example.com")
    start = time.perf_counter()
    assert "unreachable" in wandb_fallback(["wandb"], clean_env, timeout=0.5)
    assert seen["timeout"] == 0.5 and time.perf_counter() - start < 1.5


def test_reachable_and_logged_in_stays_online(clean_env, fake_wandb):
    url, seen = fake_wandb
    clean_env.update(WANDB_API_KEY=FAKE_KEY, WANDB_BASE_URL=url)
    assert wandb_fallback(["wandb"], clean_env) is None and "WANDB_MODE" not in clean_env
    assert seen == ["/graphql"]


def test_rejected_key_goes_offline(clean_env, fake_wandb):
    clean_env.update(WANDB_API_KEY="0" * 40, WANDB_BASE_URL=fake_wandb[0])
    assert "rejected the API key" in wandb_fallback(["wandb"], clean_env)
    assert clean_env["WANDB_MODE"] == "offline"


def test_server_that_accepts_but_never_answers_goes_offline(clean_env, silent_port):
    clean_env.update(WANDB_API_KEY=FAKE_KEY, WANDB_BASE_URL=f"http://127.0.0.1:{silent_port}")
    start = time.perf_counter()
    assert "did not answer" in wandb_fallback(["wandb"], clean_env, timeout=0.5)
    assert time.perf_counter() - start < 2


def test_netrc_login_counts(clean_env, fake_wandb, tmp_path):
    url, _ = fake_wandb
    netrc = tmp_path / "netrc"
    netrc.write_text(f"machine 127.0.0.1\n  login user\n  password {FAKE_KEY}\n")
    netrc.chmod(0o600)
    clean_env.update(NETRC=str(netrc), WANDB_BASE_URL=url)
    assert wandb_fallback(["wandb"], clean_env) is None


def test_proxy_is_used(clean_env, fake_wandb):
    url, seen = fake_wandb
    clean_env.update(WANDB_API_KEY=FAKE_KEY, WANDB_BASE_URL="http://wandb.example.invalid", HTTP_PROXY=url)
    assert wandb_fallback(["wandb"], clean_env) is None
    assert seen == ["http://wandb.example.invalid/graphql"]  # the request went through the proxy


@pytest.mark.parametrize("env", [{"WANDB_MODE": "offline"}, {"WANDB_MODE": "disabled"}, {"WANDB_DISABLED": "true"}])
def test_already_offline_is_left_alone(clean_env, env):
    clean_env.update(env)
    before = dict(clean_env)
    assert wandb_fallback(["wandb"], clean_env) is None and clean_env == before


def test_not_reporting_to_wandb_is_left_alone(clean_env):
    assert wandb_fallback(["none"], clean_env) is None and wandb_fallback([], clean_env) is None
    assert "WANDB_MODE" not in clean_env


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.parametrize("case", ["unreachable", "not-logged-in"])
def test_training_goes_on_offline(tmp_path, tiny_model_dir, monkeypatch, caplog, case):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_INIT_TIMEOUT", "15")  # belt and braces: wandb itself cannot wait long either
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    if case == "unreachable":
        monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
        monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{_closed_port()}")
    else:
        monkeypatch.delenv("WANDB_API_KEY", raising=False)
        monkeypatch.delenv("WANDB_BASE_URL", raising=False)
    recipe = write_recipe(tmp_path, tiny_model_dir, report_to=["wandb"], max_steps=1, save_strategy="no")
    start = time.perf_counter()
    rc, lines = run_cli(["train", "--config", str(recipe)])
    assert rc == 0, lines
    assert time.perf_counter() - start < 120
    assert list((tmp_path / "run" / "wandb").glob("offline-run-*")), "no offline W&B run written"
    warned = [r.getMessage() for r in caplog.records if r.name == "rl.runtime.wandb_secrets" and "W&B" in r.getMessage()]
    assert len(warned) == 1 and "logging offline" in warned[0], warned
    assert "WANDB_MODE" not in os.environ  # the process environment is restored after the run
