"""rl/train/vllm_serve.py: the recipe's vLLM settings as `trl vllm-serve` flags, checked against TRL 1.16's own
argument dataclass and parser (a rename there fails here), unset fields left to vllm-serve, one-line errors."""

from __future__ import annotations

import dataclasses

import pytest

from rl.errors import UserError
from rl.train.vllm_serve import RECIPE_TO_SERVE, VLLMServe, serve_args, serve_settings

ALL_SET = {"model_name_or_path": "Qwen/Qwen3-0.6B", "vllm_tensor_parallel_size": 2,
           "vllm_server_data_parallel_size": 2, "vllm_server_port": 8123, "vllm_gpu_memory_utilization": 0.85,
           "vllm_server_dtype": "bfloat16", "vllm_max_model_length": 4096,
           "vllm_server_enable_prefix_caching": False, "vllm_model_impl": "transformers", "vllm_server_timeout": 900}


def trl_fields() -> set[str]:
    from trl.scripts.vllm_serve import ScriptArguments

    return {f.name for f in dataclasses.fields(ScriptArguments)}


def test_every_flag_is_a_field_of_trl_vllm_serve():
    """A rename in TRL's vllm-serve ScriptArguments fails here (and the parse below)."""
    from trl.scripts.vllm_serve import make_parser

    settings = serve_settings(ALL_SET.get, gpus=4)
    args = serve_args(settings)
    flags = [a[2:] for a in args if a.startswith("--")]
    assert set(RECIPE_TO_SERVE.values()) <= trl_fields()
    assert set(flags) <= trl_fields() and len(flags) == len(RECIPE_TO_SERVE) + 1  # + --model
    (parsed,) = make_parser().parse_args_and_config(args=args)
    assert (parsed.model, parsed.tensor_parallel_size, parsed.data_parallel_size, parsed.port,
            parsed.gpu_memory_utilization, parsed.dtype, parsed.max_model_len, parsed.enable_prefix_caching,
            parsed.vllm_model_impl) == ("Qwen/Qwen3-0.6B", 2, 2, 8123, 0.85, "bfloat16", 4096, False, "transformers")
    assert settings.timeout == 900


def test_every_recipe_field_is_one_the_recipe_parser_knows():
    from trl import GRPOConfig

    from rl.train.config import EntropyGRPOConfig, ScriptArguments

    known = {f.name for cls in (EntropyGRPOConfig, ScriptArguments, GRPOConfig) for f in dataclasses.fields(cls)}
    assert set(RECIPE_TO_SERVE) | {"vllm_server_timeout"} <= known


def test_unset_fields_keep_vllm_serves_defaults():
    settings = serve_settings({"model_name_or_path": "m"}.get, gpus=8)
    assert serve_args(settings) == ["--model", "m", "--tensor_parallel_size", "8"]  # whole node, as before
    assert settings.served_port == 8000 and settings.timeout == 240
    dp = serve_settings({"model_name_or_path": "m", "vllm_server_data_parallel_size": 2}.get, gpus=8)
    assert serve_args(dp)[2:] == ["--tensor_parallel_size", "4", "--data_parallel_size", "2"]
    cpu = serve_settings({"model_name_or_path": "m"}.get)
    assert serve_args(cpu) == ["--model", "m"]


def test_overrides_as_strings_are_converted():
    values = {"model_name_or_path": "m", "vllm_gpu_memory_utilization": "0.5", "vllm_server_port": "9000",
              "vllm_server_enable_prefix_caching": "true"}
    settings = serve_settings(values.get, gpus=1)
    assert (settings.gpu_memory_utilization, settings.port, settings.enable_prefix_caching) == (0.5, 9000, True)


@pytest.mark.parametrize("values, words", [
    ({"vllm_tensor_parallel_size": 4, "vllm_server_data_parallel_size": 4}, "= 16 GPUs, but the node has 8"),
    ({"vllm_gpu_memory_utilization": 1.5}, "vllm_gpu_memory_utilization: must be in (0, 1]"),
    ({"vllm_server_dtype": "fp8"}, "vllm_server_dtype: 'fp8' is not one of vLLM's dtypes"),
    ({"vllm_server_port": 70000}, "vllm_server_port: must be a TCP port"),
    ({"vllm_max_model_length": "4k"}, "vllm_max_model_length: '4k' is not a int"),
    ({"vllm_server_timeout": 0}, "vllm_server_timeout: must be more than 0"),
    ({"model_name_or_path": None}, "needs model_name_or_path"),
])
def test_bad_settings_are_one_line(values, words):
    with pytest.raises(UserError) as info:
        serve_settings({"model_name_or_path": "m", **values}.get, gpus=8)
    assert words in str(info.value) and "\n" not in str(info.value)


def test_settings_object_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        VLLMServe(model="m").port = 1  # type: ignore[misc]
