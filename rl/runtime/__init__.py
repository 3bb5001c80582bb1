"""What a run needs around training: checkpoints, preemption, fault guards, safe outputs, assets and models, W&B, CPU ranks."""
