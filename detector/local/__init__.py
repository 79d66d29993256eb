"""The local system: a Kafka broker, fraudstream's topics and every process, on one machine.

``broker`` runs a single-node KRaft broker from its jars (``jars`` fetches them once,
``broker_config`` writes its configuration), ``topics`` creates fraudstream's topics on
any broker, ``up`` supervises the broker, detector, review service and simulator as
child processes, and ``logs`` configures the structured logs every process writes.
Nothing here touches a transaction: settings come in, processes and topics come out,
and the data flows through Kafka between the processes. ``commands`` holds the
``fraudstream broker``, ``topics`` and ``up`` commands.
"""
