"""Launching runs: `rl submit` (Slurm), `rl train --dry-run` (preflight), the shipped recipes."""
