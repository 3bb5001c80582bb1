"""The shard plan of an `rl data rpt` build and an estimate of its work, without the proxy model (`--dry-run`).

The corpus is read lazily in full (up to `max_documents`), exactly as the build reads it, so the
documents and characters of every shard are exact counts: documents go in blocks of
`block_documents`, block b to shard b mod N (rl/data/shards.py). Tokens are an estimate, labelled as
one: the proxy's tokenizer is run on the first `sample_documents` documents only, and every shard's
characters are scaled by the tokens per character measured there. Tokens to score are about the
tokens of the documents long enough to give a position (the proxy scores every position once; its
forward reads up to twice that, because windows overlap by half).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rl.data.settings import RPTBuildConfig
from rl.errors import UserError
from rl.data.corpus import CorpusStats, read_corpus
from rl.data.proxy import check_proxy
from rl.data.shards import ShardPlan, blocks, shards_root

SAMPLE_DOCUMENTS = 256


@dataclass
class ShardWork:
    blocks: int = 0
    documents: int = 0
    characters: int = 0


@dataclass
class BuildEstimate:
    num_shards: int
    block_documents: int
    shards: list[ShardWork] = field(default_factory=list)
    sample_documents: int = 0
    sample_characters: int = 0
    sample_tokens: int = 0
    sample_scored: int = 0  # tokens of the sampled documents long enough to give a position
    skipped: str = ""
    read: str = "read in full"

    @property
    def documents(self) -> int:
        return sum(s.documents for s in self.shards)

    @property
    def characters(self) -> int:
        return sum(s.characters for s in self.shards)

    def tokens(self, characters: int) -> int:
        """Estimated tokens to score in `characters` of text (the sample's ratio)."""
        return round(characters * self.sample_scored / self.sample_characters) if self.sample_characters else 0

    def format(self, output: str) -> str:
        n = self.num_shards
        ratio = self.sample_scored / self.sample_characters if self.sample_characters else 0.0
        lines = [
            f"shard plan: {n} shard{'s' if n != 1 else ''} of {output}, blocks of {self.block_documents} documents, "
            f"block b -> shard b mod {n}; shard i writes {shards_root(output)}/{ShardPlan(n, 0).name.replace('00000-of', 'I-of')}",
            f"corpus: {self.documents:,} documents, {self.characters:,} characters ({self.read}, exact)"
            + (f"; {self.skipped}" if self.skipped else ""),
            f"tokens to score: ~{self.tokens(self.characters):,} (estimate: {ratio:.3f} tokens to score per character, "
            f"the proxy's tokenizer over the first {self.sample_documents} documents; the proxy forward reads up to 2x that, "
            "windows overlap by half)",
            f"{'shard':>5} {'blocks':>7} {'documents':>10} {'characters':>13} {'~tokens to score':>17}",
        ]
        for i, s in enumerate(self.shards):
            lines.append(f"{i:>5} {s.blocks:>7,} {s.documents:>10,} {s.characters:>13,} {self.tokens(s.characters):>17,}")
        idle = sum(1 for s in self.shards if not s.documents)
        if idle:
            lines.append(f"note: {idle} of {n} shards get no document (fewer blocks than shards); use fewer shards "
                         "or a smaller --block-documents")
        return "\n".join(lines)


def estimate_build(cfg: RPTBuildConfig, num_shards: int, tokenizer=None,
                   sample_documents: int = SAMPLE_DOCUMENTS) -> BuildEstimate:
    """Read the corpus (lazily) and count each shard's blocks, documents and characters; tokenize a sample.

    `tokenizer`: the proxy's (default: loaded from cfg.proxy_model without weights, rl/data/proxy.py)."""
    cfg.validate()
    ShardPlan(num_shards, 0)
    if tokenizer is None:
        _, tokenizer = check_proxy(cfg.proxy_model)
    est = BuildEstimate(num_shards, cfg.block_documents, [ShardWork() for _ in range(num_shards)])
    stats = CorpusStats()
    documents = read_corpus(cfg.corpus, stats=stats, text_field=cfg.text_field, id_field=cfg.id_field)
    for b, docs in enumerate(blocks(documents, cfg.block_documents, cfg.max_documents)):
        shard = est.shards[b % num_shards]
        shard.blocks += 1
        shard.documents += len(docs)
        shard.characters += sum(len(d.text) for d in docs)
        take = docs[: max(0, sample_documents - est.sample_documents)]
        if take:
            enc = tokenizer([d.text for d in take], add_special_tokens=False)["input_ids"]
            for d, ids in zip(take, enc):
                est.sample_documents += 1
                est.sample_characters += len(d.text)
                est.sample_tokens += len(ids)
                if len(ids) >= cfg.min_context_tokens + 1:
                    est.sample_scored += len(ids) - 1
    if not est.documents:
        raise UserError(f"--corpus {cfg.corpus}: no document to build from")
    if cfg.max_documents:
        est.read = f"read up to max_documents {cfg.max_documents}"
    if stats.total_skipped:
        est.skipped = stats.summary()
    return est
