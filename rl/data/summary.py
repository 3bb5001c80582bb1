"""What an RPT build saw (`BuildSummary`): counters and an entropy histogram that add up across
blocks and shards, so a sharded build reports exactly what the one-process build reports, and its
memory stays flat however many positions are scored (no list of every entropy is kept)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

# Entropy histogram resolution (nats): percentiles are reported to this precision.
BIN = 0.01
COUNTERS = ("documents", "documents_too_short", "tokens", "candidate_positions", "positions_above_threshold",
            "positions_kept")


@dataclass
class BuildSummary:
    documents: int = 0
    documents_too_short: int = 0
    tokens: int = 0
    candidate_positions: int = 0
    positions_above_threshold: int = 0
    positions_kept: int = 0
    entropy_percentiles: dict = field(default_factory=dict)
    corpus_summary: str = ""
    files: list = field(default_factory=list)  # every file written (set by build_rpt_dataset)
    entropy_histogram: dict = field(default_factory=dict, repr=False)  # bin index (str) -> positions

    def add_entropy(self, value: float) -> None:
        key = str(int(max(0.0, value) / BIN))
        self.entropy_histogram[key] = self.entropy_histogram.get(key, 0) + 1

    def add(self, other: "BuildSummary | dict") -> None:
        """Add another block's or shard's counts (a BuildSummary or its `record()`)."""
        data = other if isinstance(other, dict) else other.record()
        for name in COUNTERS:
            setattr(self, name, getattr(self, name) + int(data.get(name, 0)))
        for key, count in (data.get("entropy_histogram") or {}).items():
            self.entropy_histogram[key] = self.entropy_histogram.get(key, 0) + int(count)
        self.entropy_percentiles = self.percentiles()

    def percentiles(self) -> dict:
        """p10 ... p99 of the scored positions' entropies, from the histogram (bin centres, BIN precision)."""
        total = sum(self.entropy_histogram.values())
        if not total:
            return {}
        ordered = sorted((int(k), c) for k, c in self.entropy_histogram.items())
        out = {}
        for q in (10, 50, 80, 90, 99):
            rank = min(total - 1, int(round(q / 100 * (total - 1))))
            seen = 0
            for key, count in ordered:
                seen += count
                if seen > rank:
                    out[q] = round((key + 0.5) * BIN, 6)
                    break
        return out

    def record(self) -> dict:
        """The JSON form saved in rpt_build.json and in each shard's progress (files left out)."""
        data = {k: v for k, v in asdict(self).items() if k != "files"}
        data["entropy_histogram"] = dict(sorted(self.entropy_histogram.items(), key=lambda kv: int(kv[0])))
        data["entropy_percentiles"] = {str(k): v for k, v in self.percentiles().items()}
        return data

    def format(self) -> str:
        pct = ", ".join(f"p{k}={v:.3f}" for k, v in self.percentiles().items())
        return (
            f"documents: {self.documents} read, {self.documents_too_short} too short for one task\n"
            f"tokens: {self.tokens}; positions scored: {self.candidate_positions}; "
            f"at/above min entropy: {self.positions_above_threshold}; kept: {self.positions_kept}\n"
            f"entropy percentiles (nats): {pct or 'n/a'}\n"
            f"corpus: {self.corpus_summary}"
        )
