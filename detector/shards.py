"""Shards of the model step.

The model step can run as several shards, one per worker, each with models of its own:
a transaction is scored by the shard its id hashes to, and every shard learns every
label, so that each shard's classifier is the one a single model step would train.
(Sending a legitimate label to its own shard only, weighed by the number of shards,
halves the learning but cost 0.07 of average precision on the Handbook's July weeks
with two shards; every label to every shard holds it at the single model's 0.672.)
Control messages reach every shard, so thresholds, rules and the deciding model are one
policy; in volume and capacity modes each shard keeps its part over its own scores.
"""

from __future__ import annotations

import dataclasses
import zlib

from detector.items import Featured, LabelToLearn, ModelIn
from detector.settings import ScoringSettings


def shard_window(config: ScoringSettings) -> int:
    """Labelled transactions in each shard's quality window: together, the configured."""
    return -(-config.quality_window // config.shards)


def shard_of(transaction_id: str, shards: int) -> int:
    """The model shard that scores transaction ``transaction_id`` (stable everywhere)."""
    if shards == 1:
        return 0
    return zlib.crc32(transaction_id.encode()) % shards


def to_shards(item: ModelIn, shards: int) -> list[tuple[int, ModelIn]]:
    """The shards an input of the model step goes to, with what each of them gets."""
    if shards == 1:
        return [(0, item)]
    if isinstance(item, Featured):
        return [(shard_of(item.transaction.transaction_id, shards), item)]
    if isinstance(item, LabelToLearn):
        home = shard_of(item.transaction_id, shards)
        away = dataclasses.replace(item, home=False)
        return [(i, item if i == home else away) for i in range(shards)]
    return [(i, item) for i in range(shards)]
