"""fraudstream's streaming service: the transaction path from Kafka to decisions.

Data enters as JSON records on the ``transactions``, ``labels`` and ``control`` topics.
``validation`` turns each record into an event of ``contracts`` or a dead letter;
``dataflow`` (Bytewax) keys the events by card and terminal and hands them to
``scoring``, whose ``ScoringCore`` keeps the per-card and per-terminal state and runs
the models of the ``models`` package; ``decision`` turns a score into allow, review or
block and ``reasons`` explains it. Data leaves as records on the ``decisions``,
``alerts``, dead-letter (``transactions.dlq``) and ``model-status`` topics, and as the
Prometheus figures of ``metrics``. ``settings`` and ``kafka_config`` configure it all;
``cli`` is the ``fraudstream`` command.

Around the path, in subpackages: ``local`` (the local system: broker, topics,
supervisor), ``replay`` (datasets, the simulator, publishing and offline evaluation)
and ``bench`` (benchmarks through a real broker).
"""

__version__ = "0.1.0"
