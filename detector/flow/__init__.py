"""The Bytewax side of the detector: keyed steps, Kafka ends, recovery and shards.

With ``detector/dataflow.py``, the only code that imports Bytewax.
"""
