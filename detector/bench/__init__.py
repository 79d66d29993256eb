"""``fraudstream bench``: the streaming path measured as a user runs it, through a broker.

- ``throughput``: the plain loop (consumer -> ``ScoringCore`` -> producer, the peer) and
  the detector with 1, 2, ... processes on the same pre-loaded topic; tx/s from the
  decisions' Kafka timestamps, peak RSS per process, recovery store size; then the
  latency of a 1-process detector under a steady offered load.
- ``memory``: months of the Handbook through one detector process, RSS, store size and
  state counts every few days of event time.
- ``plain``: the plain loop itself (``python -m detector.bench.plain``).

Data enters as Handbook transactions (``detector.replay.datasets``) pre-loaded into the
topics of a broker of its own; it leaves as the decisions read back from Kafka, turned
into a report. ``command`` holds the ``fraudstream bench`` command.

Everything is measured from outside the systems (Kafka timestamps, ``/proc``, the disk,
``/metrics``), never from their internals. Nothing here asserts on time.
"""
