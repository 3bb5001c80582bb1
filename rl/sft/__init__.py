"""`rl sft`: supervised fine-tuning on TRL SFTTrainer, with CAFT auxiliary multi-token heads (rl/sft/trainer.py)."""
