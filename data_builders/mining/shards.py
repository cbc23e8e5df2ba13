"""Judge scores on disk in shards: the unit of work, of multi-process splitting and of resumption.

Shard ``i`` holds the scores of queries ``[i * shard_size, (i + 1) * shard_size)`` of a run. Each shard is one
JSON file written to a temporary name and renamed, so it exists completely or not at all: a run killed at any
moment and started again skips every finished shard and recomputes only the rest. Shards live in a folder named
after the fingerprint of everything that determines the scores (judge, prompt, records, retrieval), so a changed
setting never reuses stale scores.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..storage import atomic_write_bytes


class ShardStore:
    """Judge-score shards of one run configuration.

    Args:
        directory: the shard folder (one per fingerprint).
        n_queries: queries of the run (in order).
        shard_size: queries per shard.
    """

    def __init__(self, directory: str | Path, n_queries: int, shard_size: int):
        if shard_size < 1:
            raise ValueError(f"shard_size must be >= 1, got {shard_size}")
        self.directory = Path(directory)
        self.n_queries = n_queries
        self.shard_size = shard_size

    @property
    def n_shards(self) -> int:
        return -(-self.n_queries // self.shard_size)

    def query_range(self, shard: int) -> range:
        """The query indices of ``shard``."""
        start = shard * self.shard_size
        return range(start, min(start + self.shard_size, self.n_queries))

    def path(self, shard: int) -> Path:
        return self.directory / f"shard-{shard:06d}.json"

    def finished(self) -> list[int]:
        """Shards already on disk."""
        return [shard for shard in range(self.n_shards) if self.path(shard).exists()]

    def pending(self) -> list[int]:
        """Shards still to compute."""
        return [shard for shard in range(self.n_shards) if not self.path(shard).exists()]

    def write(self, shard: int, records: list[dict[str, Any]], writer: int = 0) -> Path:
        """Atomically write the records (one per query of ``shard``: id, candidate ids, scores).

        ``writer`` (the process index) is kept for diagnostics; the scores never depend on it.
        """
        payload = json.dumps({"shard": shard, "writer": writer, "records": records})
        return atomic_write_bytes(self.path(shard), payload.encode("utf-8"))

    def read(self, shard: int) -> list[dict[str, Any]]:
        """The records of a finished shard; a damaged file raises an error naming it (delete it to recompute)."""
        path = self.path(shard)
        try:
            with open(path, encoding="utf-8") as handle:
                payload = json.load(handle)
        except (OSError, json.JSONDecodeError) as error:
            raise ValueError(f"judge shard {path} cannot be read ({error}); delete it to recompute it") from error
        expected = len(self.query_range(shard))
        if payload.get("shard") != shard or len(payload.get("records", [])) != expected:
            raise ValueError(f"judge shard {path} does not hold the {expected} queries of shard {shard}; delete it")
        return payload["records"]
