"""The model step's shards: one key per shard, each landing on a worker of its own."""

from __future__ import annotations

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from detector.flow.stamped import ShardIn, Stamped
from detector.items import ModelIn
from detector.settings import Settings
from detector.shards import to_shards


def shard_keys(shards: int, settings: Settings) -> list[str]:
    """The keys of the model step's shards, one per worker as far as they go.

    Bytewax sends a key to the worker its hash picks, and two shards on one worker would
    score in turn, not side by side: each shard's key is chosen among candidates so that
    shard ``i`` lands on worker ``i`` modulo the cluster's workers. Where keys land is
    learned from Bytewax itself, by a small dataflow run in this process.
    """
    workers = max(len(settings.detector.cluster), 1) * settings.detector.workers
    if shards == 1 or workers == 1:
        return [f"model-{i}" for i in range(shards)]
    landing = where_keys_land([f"model-{i}" for i in range(64 * workers)], workers)
    keys: list[str] = []
    for shard in range(shards):
        wanted = shard % workers
        key = next((k for k, w in landing.items() if w == wanted and k not in keys), None)
        keys.append(key if key is not None else f"model-shard-{shard}")
    return keys


def where_keys_land(keys: list[str], workers: int) -> dict[str, int]:
    """The worker Bytewax sends each of ``keys`` to, in a cluster of ``workers``."""
    from bytewax.testing import TestingSource, cluster_main

    landed: dict[str, int] = {}

    class _Where(StatelessSinkPartition[str]):
        def __init__(self, worker: int) -> None:
            self.worker = worker

        def write_batch(self, items: list[str]) -> None:
            for key in items:
                landed[key] = self.worker

    class _Sink(DynamicSink[str]):
        def build(self, step_id: str, worker_index: int, worker_count: int) -> _Where:
            return _Where(worker_index)

    probe = Dataflow("fraudstream_shard_probe")
    keyed = op.key_on("key", op.input("keys", probe, TestingSource(keys)), _same)
    landed_on = op.stateful_map("land", keyed, _land)
    op.output("where", op.key_rm("rm", landed_on), _Sink())
    cluster_main(probe, [], 0, worker_count_per_proc=workers)
    return landed


def _same(key: str) -> str:
    return key


def _land(state: None, key: str) -> tuple[None, str]:
    return None, key


def keyed_by_shard(keys: list[str], value: Stamped[ModelIn]) -> list[tuple[str, ShardIn]]:
    item, received, seq, origin = value
    return [
        (keys[shard], (shard, (routed, received, seq, origin)))
        for shard, routed in to_shards(item, len(keys))
    ]
