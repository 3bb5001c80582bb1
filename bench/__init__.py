"""Benchmarks and evidence runs (not tests): each prints ratios or paired differences against an anchor
measured in the same run, never absolute targets.

Run one from the repository root as a module, `.venv/bin/python -m bench.NAME [flags]`: benches import
what they share as modules (`bench.peak_memory`, `bench.forking_learning`, `bench.smoke`,
`tests.tiny_models`), with no `sys.path` edits, so `python bench/NAME.py` does not find them.

A bench is a module here with a `__main__` block; the others are shared helpers (`peak_memory`,
`forking_agreement`, `demo_runs`, `smoke`). Every bench has a `--smoke` mode: a tiny local model
(bench/smoke.py) or the bench's own toy shapes, no builtin model, no network, seconds; it runs the
bench's real code path end to end and prints the normal output, down to the same last line.
tests/bench/test_bench_smoke.py runs every bench's `--smoke` (marked slow; CI runs it), so a bench
that crashes fails CI. Measured figures belong in each bench's docstring (and the README), not in
its `--help` text.
"""
