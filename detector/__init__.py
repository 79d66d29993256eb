"""fraudstream's streaming service: the transaction path from Kafka to decisions.

Data enters as JSON records on the ``transactions``, ``labels`` and ``control`` topics.
``validation`` turns each record into an event of ``contracts`` or a dead letter;
``dataflow`` (Bytewax, with the ``flow`` package) keys the events by card, by terminal
and by model shard and runs the steps ``cards``, ``terminals`` and ``scoring`` (the
model step, with the models of the ``models`` package) on them, passing the ``items``
between them; ``core``'s ``ScoringCore`` runs the same steps in one process.
``decision`` turns a score into allow, review or block and ``reasons`` explains it.
Data leaves as records on the ``decisions``, ``alerts``, dead-letter
(``transactions.dlq``) and ``model-status`` topics, and as the Prometheus figures of
``metrics``. ``settings`` and ``kafka_config`` configure it all;
``cli`` is the ``fraudstream`` command.

Around the path, in subpackages: ``local`` (the local system: broker, topics,
supervisor), ``replay`` (datasets, the simulator, publishing and offline evaluation)
and ``bench`` (benchmarks through a real broker).
"""

__version__ = "0.1.0"
