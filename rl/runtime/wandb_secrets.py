"""W&B fallback and secret hygiene for `rl train`.

`wandb_fallback`: when W&B is asked for but has no key, an unreachable server or a rejected key,
switch to offline logging with one warning (every probe has a timeout). `move_secret_args` /
`redact_argv`: a token passed as a command-line flag is moved to the environment and redacted, so it
never lands in training_args.bin, the W&B run files or a kept sbatch script.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import sys
from urllib.parse import urlsplit

logger = logging.getLogger(__name__)


_WANDB_OFF = {"offline", "disabled", "dryrun"}
_TRUE = {"1", "true", "yes", "on"}
DEFAULT_WANDB_URL = "https://api.wandb.ai"


def _wandb_api_key(base_url: str, environ) -> str | bool | None:
    """The W&B API key (env or netrc), True for other credentials (identity token), None if not logged in."""
    if environ.get("WANDB_API_KEY"):
        return environ["WANDB_API_KEY"]
    if environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    try:
        import netrc

        path = environ.get("NETRC") or os.path.join(environ.get("HOME") or os.path.expanduser("~"), ".netrc")
        entries = netrc.netrc(path)
        parts = urlsplit(base_url)
        for host in (parts.netloc, parts.hostname or ""):
            auth = entries.authenticators(host) if host else None
            if auth and auth[2]:
                return auth[2]
    except Exception:  # noqa: BLE001 - no or unreadable netrc: not logged in that way
        pass
    return None


def _verify_key(base_url: str, key: str, environ, timeout: float) -> str | None:
    """None if the server answers W&B's `viewer` query for `key` within `timeout`, else why not.

    A bare TCP connect is not enough: firewalls and proxies accept connections and never answer,
    and a revoked key only shows at `wandb.init` (which then fails the run after its own timeout).
    """
    import base64
    import json
    import urllib.error
    import urllib.request

    proxy = _proxy_for(base_url, environ)
    scheme = urlsplit(base_url).scheme or "https"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({scheme: proxy} if proxy else {}))
    token = base64.b64encode(f"api:{key}".encode()).decode()
    request = urllib.request.Request(
        base_url.rstrip("/") + "/graphql", data=json.dumps({"query": "query Viewer { viewer { id } }"}).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Basic {token}"}, method="POST")
    try:
        with opener.open(request, timeout=timeout) as response:
            body = json.loads(response.read(1 << 20) or b"{}")
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            return f"rejected the API key (HTTP {exc.code}): not logged in"
        return f"answered HTTP {exc.code}"
    except (OSError, ValueError) as exc:  # URLError, timeouts, resets, non-JSON answers
        reason = getattr(exc, "reason", None) or exc
        return f"did not answer ({str(reason)[:80] or type(exc).__name__})"
    if not ((body.get("data") or {}).get("viewer")):
        return "does not know the API key: not logged in"
    return None


def _proxy_for(url: str, environ) -> str | None:
    """The proxy URL requests to `url` go through (http(s)_proxy, honouring no_proxy), or None."""
    parts = urlsplit(url)
    scheme = parts.scheme or "https"
    proxy = environ.get(f"{scheme}_proxy") or environ.get(f"{scheme.upper()}_PROXY")
    no_proxy = (environ.get("no_proxy") or environ.get("NO_PROXY") or "").split(",")
    host = parts.hostname or ""
    if not proxy or any(n.strip() == "*" or (n.strip() and host.endswith(n.strip().lstrip("."))) for n in no_proxy):
        return None
    return proxy if "://" in proxy else f"http://{proxy}"


def _probe_tcp(url: str, environ, timeout: float) -> str | None:
    """None if a TCP connection to `url`'s host (or the proxy for it) opens within `timeout`, else why not."""
    parts = urlsplit(url)
    scheme = parts.scheme or "https"
    proxy = _proxy_for(url, environ)
    if proxy:
        parts = urlsplit(proxy)
    port = parts.port or (443 if (parts.scheme or scheme) == "https" else 80)
    try:
        with socket.create_connection((parts.hostname, port), timeout=timeout):
            return None
    except OSError as exc:
        return f"{parts.hostname}:{port} unreachable ({exc.strerror or exc.__class__.__name__})"


def wandb_fallback(report_to, environ=None, timeout: float = 3.0, warn: bool = True) -> str | None:
    """Switch W&B to offline (WANDB_MODE=offline in `environ`) when it cannot work online; returns why, or None."""
    environ = os.environ if environ is None else environ
    targets = [report_to] if isinstance(report_to, str) else list(report_to or [])
    if "wandb" not in targets and "all" not in targets:
        return None
    if environ.get("WANDB_MODE", "").strip().lower() in _WANDB_OFF:
        return None
    if environ.get("WANDB_DISABLED", "").strip().lower() in _TRUE:
        return None
    base_url = environ.get("WANDB_BASE_URL") or DEFAULT_WANDB_URL
    key = _wandb_api_key(base_url, environ)
    if not key:
        reason = "not logged in (no WANDB_API_KEY, identity token or ~/.netrc entry for " + \
                 f"{urlsplit(base_url).hostname})"
    else:
        problem = _probe_tcp(base_url, environ, timeout)
        if problem is None and isinstance(key, str):
            problem = _verify_key(base_url, key, environ, timeout)
        reason = f"server {base_url}: {problem}" if problem else None
    if reason is None:
        return None
    environ["WANDB_MODE"] = "offline"
    if warn and environ.get("RANK", "0") == "0":
        where = environ.get("WANDB_DIR") or "."
        logger.warning("W&B %s: logging offline to %s/wandb/ instead; upload later with `wandb sync`", reason, where)
    return reason


# ---------------------------------------------------------------------------------------------- secrets


SECRET_FLAG = re.compile(r"(^|[_-])(token|secret|api[_-]?key|password|passwd|access[_-]?key|private[_-]?key|"
                          r"credentials?)$", re.I)


def redact_argv(argv: list[str]) -> int:
    """Replace, in place, the values of secret-looking flags (`--hub_token X`, `--x_api_key=Y`); returns how many.

    W&B records the command line (sys.argv) in every run; `ps` still shows the original, so secrets
    belong in the environment, never on the command line.
    """
    count = 0
    for i, tok in enumerate(argv):
        if not tok.startswith("--"):
            continue
        name, eq, _ = tok.partition("=")
        if not SECRET_FLAG.search(name[2:]):
            continue
        if eq:
            argv[i] = f"{name}=<redacted>"
            count += 1
        elif i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            argv[i + 1] = "<redacted>"
            count += 1
    return count


def move_secret_args(training_args, environ=None, argv: list[str] | None = None) -> list[str]:
    """Move token fields (`hub_token`) out of the training arguments into the environment; returns the fields moved.

    TrainingArguments is pickled into every checkpoint as training_args.bin; a token in it would be
    copied with every checkpoint. huggingface_hub reads HF_TOKEN, so pushing still works. The value
    is also redacted from `argv` (default: sys.argv), which W&B saves with the run.
    """
    environ = os.environ if environ is None else environ
    moved = []
    token = getattr(training_args, "hub_token", None)
    if token:
        environ.setdefault("HF_TOKEN", token)
        training_args.hub_token = None
        moved.append("hub_token")
        logger.warning("hub_token: moved to HF_TOKEN for this process so it is not saved in checkpoints "
                       "(training_args.bin) or W&B; set HF_TOKEN in the environment instead of the recipe/flags")
    redact_argv(sys.argv if argv is None else argv)
    return moved
