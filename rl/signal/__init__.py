"""The bottom layer: pure signal math and the one way every stage reads a model.

Entropy and top-k entropy, surprise, left padding, how a scoring read sees a model (BOS, real
logits, eval mode) and how a completion's text is recovered. `rl/data`, `rl/eval`, `rl/train`,
`rl/sft` and `rl/prune` all use these; this folder imports nothing from them (only `rl.errors`).
"""
