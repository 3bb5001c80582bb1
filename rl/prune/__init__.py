"""`rl prune`: likelihood-preserving greedy pruning of reasoning chains (Singh and Hakkani-Tür,
"Do LLMs Encode Functional Importance of Reasoning Tokens?", arXiv 2601.03066).

A pruner LM deletes, one token at a time, the chain token whose removal costs the least
log p(answer | question, pruned chain); the deletion order ranks every token. `pruner.py` holds the
scoring and deletion (pure torch, batched), `categories.py` the offline token-function categoriser,
`chains.py` the input rows, `report.py` the outputs and `cli.py` the command.
"""
