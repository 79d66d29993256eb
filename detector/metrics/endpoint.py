"""The detector's /metrics endpoint: its registries as one page, on a port of its own."""

from __future__ import annotations

import socket
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.core import Metric
from prometheus_client.exposition import start_http_server
from prometheus_client.registry import Collector

from detector.metrics import METRICS, DetectorMetrics


class _Combined(Collector):
    """Several registries as one, for a single /metrics page."""

    def __init__(self, registries: Iterable[CollectorRegistry]) -> None:
        self._registries = tuple(registries)

    def describe(self) -> Iterator[Metric]:
        return iter(())  # no name checks across registries: each checks its own

    def collect(self) -> Iterator[Metric]:
        for registry in self._registries:
            yield from registry.collect()


class MetricsServerError(RuntimeError):
    """The metrics endpoint could not start (port in use, unknown host, ...)."""


@dataclass(frozen=True)
class MetricsServer:
    """A running /metrics endpoint."""

    host: str
    port: int
    _server: object

    def stop(self) -> None:
        shutdown = getattr(self._server, "shutdown", None)
        close = getattr(self._server, "server_close", None)
        if shutdown is not None:
            shutdown()
        if close is not None:
            close()


def metrics_port(base_port: int, process_id: int | None, cluster: Sequence[str] = ()) -> int:
    """The port of process ``process_id`` of a cluster (``cluster``: host:port of each).

    Processes on one host cannot share a port: each takes ``base_port`` plus the number
    of processes before it on the same host. Processes on hosts of their own (pods) all
    serve ``base_port``.
    """
    offset = 0
    if cluster and process_id:
        host = cluster[process_id].rsplit(":", 1)[0] if process_id < len(cluster) else None
        offset = sum(1 for a in cluster[:process_id] if a.rsplit(":", 1)[0] == host)
    port = base_port + offset
    if port > 65535:
        raise MetricsServerError(
            f"metrics port {base_port} + {offset} processes before this one on its host = "
            f"{port} is beyond 65535: lower FRAUDSTREAM_METRICS_PORT, or set it to 0 to "
            "disable the endpoint"
        )
    return port


def serve(
    host: str,
    port: int,
    metrics: DetectorMetrics = METRICS,
    *,
    include_default: bool = True,
) -> MetricsServer:
    """Serve ``metrics`` (and the default registry, Bytewax's) at ``http://host:port/metrics``.

    Raises ``MetricsServerError`` with a plain explanation when the address is taken or
    cannot be bound.
    """
    combined = CollectorRegistry(auto_describe=False)
    registries = [metrics.registry, REGISTRY] if include_default else [metrics.registry]
    combined.register(_Combined(registries))
    try:
        server, _thread = start_http_server(port, addr=host, registry=combined)
    except OSError as error:
        raise MetricsServerError(_bind_failure(host, port, error)) from error
    bound_port = server.server_address[1]
    return MetricsServer(host, int(bound_port), server)


def _bind_failure(host: str, port: int, error: OSError) -> str:
    import errno

    where = f"{host}:{port}"
    if error.errno == errno.EADDRINUSE:
        return (
            f"cannot serve the detector's metrics on {where}: the port is already in use "
            f"(another detector, or another program). Set FRAUDSTREAM_METRICS_PORT to a free "
            f"port, or to 0 to disable the endpoint."
        )
    if isinstance(error, socket.gaierror):
        return (
            f"cannot serve the detector's metrics on {where}: unknown host {host!r} "
            f"({error.strerror}). Check FRAUDSTREAM_METRICS_HOST."
        )
    return (
        f"cannot serve the detector's metrics on {where}: {error.strerror or error}. "
        f"Check FRAUDSTREAM_METRICS_HOST and FRAUDSTREAM_METRICS_PORT (0 disables)."
    )
