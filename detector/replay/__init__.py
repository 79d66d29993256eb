"""Transactions from files and simulations: into Kafka, or through the scoring core offline.

Data enters as a dataset (``datasets``: the Handbook's CSV or JSON lines in the
Transaction contract) or from the seeded ``simulator``, as ``Record`` objects carrying
ground truth. ``publishing`` sends them to the ``transactions`` topic, paced, with
chargebacks on ``labels`` later; ``evaluation`` instead replays them in event time
through the production ``ScoringCore`` and scores the result with the Handbook's
weekly protocol (``handbook``). Out come Kafka records, or reports and tables.
``commands`` holds ``fraudstream simulate``, ``replay``, ``evaluate`` and ``model-info``.
"""
