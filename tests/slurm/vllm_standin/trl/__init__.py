"""NOT TRL: the stand-in package of tests/slurm/test_vllm_node.py, whose job puts this directory first on
PYTHONPATH so that slurm/train.sbatch's `$PYTHON -m trl.cli.main vllm-serve ...` starts trl/cli/main.py here
(a process answering /health) instead of vLLM, which cannot run on this machine. Only that job sees it; its
other processes (the health wait, the stand-in trainer, accelerate) import no `trl`.
"""
