"""Training: recipe config, the GRPO trainer subclass, the forking-token mask, loss variants, the signal check, `rl train`."""
