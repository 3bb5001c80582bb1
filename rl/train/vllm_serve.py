"""The recipe's vLLM settings as `trl vllm-serve` arguments, for `rl submit --vllm-server-node` and the dry run.

Why: TRL's `GRPOConfig` says its server-side settings (`vllm_gpu_memory_utilization`,
`vllm_tensor_parallel_size`) "must be passed separately when launching the vLLM server"; a job that
starts the server itself must pass them, or the recipe's values are silently lost. Here (train layer,
pure: imports only `rl.errors`) so that the dry run (rl/train/preflight) and `rl submit` (rl/launch/slurm.py)
read them the same way; the job's wait for the server is rl/launch/vllm_server.py.

Recipe field -> `trl vllm-serve` flag (TRL 1.16 `trl.scripts.vllm_serve.ScriptArguments`;
tests/rl/train/test_vllm_serve.py parses every flag with TRL's own parser, so a rename there fails CI):

    model_name_or_path                 --model
    vllm_tensor_parallel_size          --tensor_parallel_size   (unset: every GPU of the server node / data parallel)
    vllm_server_data_parallel_size     --data_parallel_size
    vllm_server_port                   --port                   (the trainer connects to the same field)
    vllm_gpu_memory_utilization        --gpu_memory_utilization
    vllm_server_dtype                  --dtype
    vllm_max_model_length              --max_model_len
    vllm_server_enable_prefix_caching  --enable_prefix_caching
    vllm_model_impl                    --vllm_model_impl

A field the recipe (or an override) does not set is not passed: `trl vllm-serve`'s own default applies
(TRL's GRPOConfig defaults, e.g. 0.3 GPU memory, are colocate defaults and would starve a server).
`vllm_server_timeout` is how long the job waits for the server's /health.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from rl.errors import UserError

# recipe field -> trl vllm-serve ScriptArguments field (the flag is `--` + the field name)
RECIPE_TO_SERVE = {
    "vllm_tensor_parallel_size": "tensor_parallel_size",
    "vllm_server_data_parallel_size": "data_parallel_size",
    "vllm_server_port": "port",
    "vllm_gpu_memory_utilization": "gpu_memory_utilization",
    "vllm_server_dtype": "dtype",
    "vllm_max_model_length": "max_model_len",
    "vllm_server_enable_prefix_caching": "enable_prefix_caching",
    "vllm_model_impl": "vllm_model_impl",
}
DTYPES = ("auto", "half", "float16", "bfloat16", "float", "float32")  # vLLM's --dtype choices
DEFAULT_PORT = 8000  # TRL's vllm_server_port and vllm-serve's --port default
DEFAULT_TIMEOUT = 240.0  # TRL's vllm_server_timeout default


@dataclasses.dataclass(frozen=True)
class VLLMServe:
    """The server node's `trl vllm-serve` settings; None: not set by the recipe (vllm-serve's default)."""

    model: str
    gpus: int | None = None  # GPUs of the server node (None: unknown, e.g. a CPU job)
    tensor_parallel_size: int | None = None
    data_parallel_size: int | None = None
    port: int | None = None
    gpu_memory_utilization: float | None = None
    dtype: str | None = None
    max_model_len: int | None = None
    enable_prefix_caching: bool | None = None
    vllm_model_impl: str | None = None
    timeout: float = DEFAULT_TIMEOUT  # the recipe's vllm_server_timeout: how long the job waits for /health

    @property
    def engine_tp(self) -> int | None:
        """Tensor-parallel size the server runs: the recipe's, else every GPU of the node / data parallel."""
        if self.tensor_parallel_size is not None:
            return self.tensor_parallel_size
        return max(self.gpus // (self.data_parallel_size or 1), 1) if self.gpus else None

    @property
    def served_port(self) -> int:
        return self.port if self.port is not None else DEFAULT_PORT


def _convert(field: str, value, kind: type):
    if value is None:
        return None
    try:
        if kind is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("true", "1", "yes"):
                return True
            if text in ("false", "0", "no"):
                return False
            raise ValueError(value)
        if kind is int and (isinstance(value, bool) or float(value) != int(float(value))):
            raise ValueError(value)
        return kind(float(value)) if kind is int else kind(value)
    except (TypeError, ValueError):
        raise UserError(f"{field}: {value!r} is not a {kind.__name__} (it goes to `trl vllm-serve`)") from None


def serve_settings(value: Callable[[str], object], *, model: str | None = None,
                   gpus: int | None = None) -> VLLMServe:
    """The server's settings; `value(field)` is the recipe field as given (its override winning), None when unset.

    UserError (one line, naming the field) for a value the server cannot use. A getter, not the recipe:
    `rl submit` reads the YAML plus overrides, the dry run its parsed fields (`raw_field`).
    """
    model = model or value("model_name_or_path")
    if not model:
        raise UserError("--vllm-server-node needs model_name_or_path in the recipe (the model the server loads)")
    kinds = {"tensor_parallel_size": int, "data_parallel_size": int, "port": int, "gpu_memory_utilization": float,
             "dtype": str, "max_model_len": int, "enable_prefix_caching": bool, "vllm_model_impl": str}
    values = {serve: _convert(field, value(field), kinds[serve])
              for field, serve in RECIPE_TO_SERVE.items()}
    timeout = _convert("vllm_server_timeout", value("vllm_server_timeout"), float)
    settings = VLLMServe(model=str(model), gpus=gpus, timeout=DEFAULT_TIMEOUT if timeout is None else timeout,
                         **values)
    problem = serve_problem(settings)
    if problem:
        raise UserError(problem)
    return settings


def serve_problem(s: VLLMServe) -> str | None:
    """Why the server could not start with these settings (one line), or None."""
    for field, value, low in (("vllm_tensor_parallel_size", s.tensor_parallel_size, 1),
                              ("vllm_server_data_parallel_size", s.data_parallel_size, 1),
                              ("vllm_max_model_length", s.max_model_len, 1)):
        if value is not None and value < low:
            return f"{field}: must be at least {low}, got {value}"
    if s.port is not None and not 1 <= s.port <= 65535:
        return f"vllm_server_port: must be a TCP port (1-65535), got {s.port}"
    if s.gpu_memory_utilization is not None and not 0 < s.gpu_memory_utilization <= 1:
        return f"vllm_gpu_memory_utilization: must be in (0, 1] for the server, got {s.gpu_memory_utilization}"
    if s.dtype is not None and s.dtype not in DTYPES:
        return f"vllm_server_dtype: {s.dtype!r} is not one of vLLM's dtypes ({', '.join(DTYPES)})"
    if not s.timeout > 0:
        return f"vllm_server_timeout: must be more than 0 seconds, got {s.timeout}"
    if s.gpus:
        used = (s.engine_tp or 1) * (s.data_parallel_size or 1)
        if used > s.gpus:
            return (f"vLLM server node: tensor parallel {s.engine_tp} x data parallel {s.data_parallel_size or 1} "
                    f"= {used} GPUs, but the node has {s.gpus}; lower vllm_tensor_parallel_size or "
                    "vllm_server_data_parallel_size")
    return None


def serve_args(s: VLLMServe) -> list[str]:
    """`trl vllm-serve` arguments (after `vllm-serve`): `--model M` and each set field as `--name value`."""
    args = ["--model", s.model]
    tp = s.engine_tp
    if tp is not None:
        args += ["--tensor_parallel_size", str(tp)]
    for name in ("data_parallel_size", "port", "gpu_memory_utilization", "dtype", "max_model_len",
                 "enable_prefix_caching", "vllm_model_impl"):
        value = getattr(s, name)
        if value is not None:
            args += [f"--{name}", str(value).lower() if isinstance(value, bool) else str(value)]
    return args
