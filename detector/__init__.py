"""fraudstream's streaming service: event contracts, scoring core, dataflow and CLI."""

__version__ = "0.1.0"
