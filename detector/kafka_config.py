"""librdkafka configurations for the Kafka clients of the detector side.

Every producer is idempotent and waits for ``acks=all``: a record the broker acknowledges
is on every in-sync replica (at least ``min.insync.replicas`` of them, see
``detector.local.topics``), and retries never duplicate or reorder it. A record that is not
delivered raises ``KafkaDeliveryError`` from the producer's ``poll`` or ``flush``, unless
the caller checks its deliveries itself with a callback per record.

``settings.kafka.kafka_extra_config`` (``FRAUDSTREAM_KAFKA_EXTRA_CONFIG``, e.g. SASL settings)
goes on top of every configuration, but it cannot weaken the producers' durability.

librdkafka's own log lines go to the structured log, at most ``LOG_LINES_PER_KIND`` per
``LOG_INTERVAL_SECONDS`` for each facility and level, instead of straight to stderr (a
down broker made each consumer print a line every 50 ms). And the connection to the
cluster is watched, once per process: one ``kafka broker lost`` event when no bootstrap
broker can be reached, one ``kafka broker back`` when a Kafka request works again.

A client serves its callbacks (logs, errors, delivery reports) in its ``poll``,
``consume`` or ``flush``; an admin client only in its ``poll``.
"""

from __future__ import annotations

import logging
import re
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import structlog
from confluent_kafka import KafkaError, KafkaException, Message
from confluent_kafka.admin import AdminClient

from detector.local.logs import RateLimiter
from detector.settings import Settings

log = structlog.get_logger("fraudstream.kafka")

EXTRA_CONFIG_ENV = "FRAUDSTREAM_KAFKA_EXTRA_CONFIG"
LINGER_MS = 5
"""Batching delay of producers: a few ms of latency for far fewer requests."""
# How far a consumer reads ahead of what it was asked for, per partition (the Kafka
# input of the detector has a consumer per partition). librdkafka's defaults, 100,000
# records or 64 MiB, let a detector catching up on a backlog of a dozen partitions hold
# hundreds of MiB of records it will not reach for seconds; a poll takes at most
# ``FRAUDSTREAM_KAFKA_BATCH_SIZE`` (1,000) records per partition.
CONSUMER_PREFETCH = {"queued.min.messages": 10_000, "queued.max.messages.kbytes": 8_192}
LOG_LINES_PER_KIND = 3
LOG_INTERVAL_SECONDS = 60.0
PROBE_TIMEOUT_SECONDS = 0.5
# How long a probe's answer stands: a cluster with one broker down is then not probed on
# each of its clients' reconnection attempts.
PROBE_REACHABLE_SECONDS = 1.0
PROBE_UNREACHABLE_SECONDS = 0.5
RECHECK_SECONDS = 1.0
"""While the cluster is lost, how often it is tried again."""
METADATA_TIMEOUT_SECONDS = 5.0

_CONNECTION_ERRORS = frozenset({KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT})
_TRUE = frozenset({"true", "t", "1"})  # librdkafka's spellings of a true boolean
_THREAD_PREFIX = re.compile(r"^\[thrd:[^\]]*\]: ")


class KafkaDeliveryError(RuntimeError):
    """A record was not delivered (the broker refused it, or it timed out)."""

    def __init__(self, error: KafkaError, message: Message) -> None:
        super().__init__(
            f"a record for {message.topic()} [{message.partition()}] was not delivered: "
            f"{error.str()} ({error.name()})"
        )
        self.error = error


def producer_config(settings: Settings) -> dict[str, Any]:
    """An idempotent ``acks=all`` producer with ``kafka_extra_config`` on top.

    Its default delivery report (``on_delivery``) raises ``KafkaDeliveryError`` for a
    record not delivered, so that ``flush`` fails rather than a record be lost silently;
    a callback passed to ``produce`` replaces it for that record.

    Raises ``ValueError`` if the extra config lowers ``acks`` or disables idempotence.
    """
    extra = dict(settings.kafka.kafka_extra_config)
    check_durability(extra)
    return {
        "bootstrap.servers": ",".join(settings.kafka.brokers),
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": LINGER_MS,
        **extra,
        "logger": _client_logger(),
        "error_cb": _watch_for(settings).on_error,
        "on_delivery": _raise_undelivered,
    }


def consumer_config(settings: Settings, **overrides: Any) -> dict[str, Any]:
    """A consumer with a bounded prefetch (``CONSUMER_PREFETCH``), ``kafka_extra_config``
    and then ``overrides`` (``group.id`` ...)."""
    return {
        "bootstrap.servers": ",".join(settings.kafka.brokers),
        **CONSUMER_PREFETCH,
        **settings.kafka.kafka_extra_config,
        "logger": _client_logger(),
        "error_cb": _watch_for(settings).on_error,
        **overrides,
    }


def admin_config(settings: Settings) -> dict[str, Any]:
    """An admin client: bootstrap servers plus ``kafka_extra_config``, logs structured."""
    return {
        "bootstrap.servers": ",".join(settings.kafka.brokers),
        **settings.kafka.kafka_extra_config,
        "logger": _client_logger(),
        "error_cb": _watch_for(settings).on_error,
    }


def check_durability(extra: Mapping[str, Any]) -> None:
    """Raise ``ValueError`` (one line naming the variable) if ``extra`` weakens producers."""
    for key in ("acks", "request.required.acks"):
        if key in extra and str(extra[key]).strip().lower() not in ("all", "-1"):
            raise ValueError(
                f"{EXTRA_CONFIG_ENV} sets {key}={extra[key]}, but producers need acks=all "
                "so that no acknowledged record is lost: remove it"
            )
    value = extra.get("enable.idempotence")
    if value is not None and str(value).strip().lower() not in _TRUE:
        raise ValueError(
            f"{EXTRA_CONFIG_ENV} sets enable.idempotence={value}, but producers must be "
            "idempotent so that retries never duplicate a record: remove it"
        )


def _raise_undelivered(error: KafkaError | None, message: Message) -> None:
    if error is not None:
        raise KafkaDeliveryError(error, message)


# --- librdkafka's log lines ------------------------------------------------------------

_LOGGER_NAME = "fraudstream.kafka.client"
_logger_lock = threading.Lock()


class _StructuredHandler(logging.Handler):
    """Forwards librdkafka's log records to structlog, rate limited per kind."""

    def __init__(self, limiter: RateLimiter) -> None:
        super().__init__(level=logging.DEBUG)
        self.limiter = limiter

    def emit(self, record: logging.LogRecord) -> None:
        try:
            facility, client, text = _log_parts(record)
            fields: dict[str, Any] = {"facility": facility, "client": client}
            # Debug lines only come when asked for (the `debug` property): all of them.
            if record.levelno > logging.DEBUG:
                allowed, held_back = self.limiter.allow((facility, record.levelno))
                if not allowed:
                    return
                if held_back:
                    fields["held_back"] = held_back
            log.log(record.levelno, "kafka client log", message=text, **fields)
        except Exception:
            self.handleError(record)


def _log_parts(record: logging.LogRecord) -> tuple[str, str, str]:
    # confluent-kafka logs ("%s [%s] %s", facility, client name, text).
    args = record.args
    if isinstance(args, tuple) and len(args) == 3:
        facility, client, text = (str(arg) for arg in args)
        return facility, client, _THREAD_PREFIX.sub("", text)
    return "", "", record.getMessage()


def _client_logger() -> logging.Logger:
    """The logger every client's config names: it forwards to the structured log."""
    logger = logging.getLogger(_LOGGER_NAME)
    with _logger_lock:
        if not any(isinstance(h, _StructuredHandler) for h in logger.handlers):
            logger.addHandler(
                _StructuredHandler(RateLimiter(LOG_LINES_PER_KIND, LOG_INTERVAL_SECONDS))
            )
            logger.setLevel(logging.DEBUG)
            logger.propagate = False  # the root logger would print the raw line again
    return logger


# --- the connection to the cluster -----------------------------------------------------


class _ConnectionWatch:
    """Whether this process reaches the cluster at ``brokers``: one event per change.

    Clients report broken connections to ``on_error`` (their ``error_cb``). They may do so
    late (a producer serves its callbacks only when it produces), so the cluster is only
    declared lost if no bootstrap broker accepts a TCP connection either. From then on a
    thread tries a metadata request (with the clients' settings, so credentials too)
    every ``recheck`` seconds and declares the cluster back when one is answered: a
    connection that works, whatever the clients are doing meanwhile.
    """

    def __init__(
        self,
        brokers: Sequence[str],
        config: Mapping[str, Any],
        *,
        probe: Callable[[Sequence[str]], bool] | None = None,
        check: Callable[[Mapping[str, Any]], bool] | None = None,
        recheck: float = RECHECK_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.brokers = tuple(brokers)
        self.config = dict(config)
        self._probe = probe or _reachable_any
        self._check = check or _metadata_answers
        self._recheck = recheck
        self._clock = clock
        self._lock = threading.Lock()
        self._lost_since: float | None = None
        self._connection_errors = 0
        self._probed: tuple[float, bool] | None = None  # (when, reachable)
        self._errors = RateLimiter(LOG_LINES_PER_KIND, LOG_INTERVAL_SECONDS, clock)

    @property
    def lost(self) -> bool:
        return self._lost_since is not None

    def on_error(self, error: KafkaError) -> None:
        """librdkafka's ``error_cb``: all brokers down, a broken connection, or else."""
        if error.code() in _CONNECTION_ERRORS:
            self._connection_failed(error)
            return
        allowed, held_back = self._errors.allow(error.name())
        if allowed:
            log.log(
                logging.ERROR if error.fatal() else logging.WARNING,
                "kafka client error",
                code=error.name(),
                error=error.str(),
                fatal=error.fatal(),
                bootstrap=",".join(self.brokers),
                **({"held_back": held_back} if held_back else {}),
            )

    def recheck(self) -> bool:
        """Try the cluster once; if it answers, declare it back. True if it is not lost."""
        if self._lost_since is None:
            return True
        if not self._probe(self.brokers) or not self._check(self.config):
            return False
        with self._lock:
            if self._lost_since is None:
                return True
            down = self._clock() - self._lost_since
            errors = self._connection_errors
            self._lost_since = None
        # A warning like its "lost", so that both show at the same log level.
        log.warning(
            "kafka broker back",
            bootstrap=",".join(self.brokers),
            down_seconds=round(down, 1),
            connection_errors=errors,
        )
        return True

    def _connection_failed(self, error: KafkaError) -> None:
        with self._lock:
            if self._lost_since is not None:
                self._connection_errors += 1
                return
        # One broker of several failed, or the report is from before the cluster came back.
        if self._reachable():
            return
        with self._lock:
            if self._lost_since is not None:
                return
            self._lost_since = self._clock()
            self._connection_errors = 1
        log.error("kafka broker lost", bootstrap=",".join(self.brokers), error=error.str())
        threading.Thread(
            target=self._recheck_until_back, name="fraudstream-kafka-watch", daemon=True
        ).start()

    def _recheck_until_back(self) -> None:
        while not self.recheck():
            time.sleep(self._recheck)

    def _reachable(self) -> bool:
        now = self._clock()
        probed = self._probed
        if probed is not None:
            when, result = probed
            if now - when < (PROBE_REACHABLE_SECONDS if result else PROBE_UNREACHABLE_SECONDS):
                return result
        result = self._probe(self.brokers)
        self._probed = (self._clock(), result)
        return result


def _reachable_any(brokers: Sequence[str], timeout: float = PROBE_TIMEOUT_SECONDS) -> bool:
    """Whether any of ``brokers`` (host:port) accepts a TCP connection now."""
    for broker in brokers:
        host, _, port = broker.strip().rpartition(":")
        if not port.isdigit():
            continue
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
                return True
        except OSError:
            continue
    return False


def _metadata_answers(config: Mapping[str, Any]) -> bool:
    """Whether the cluster answers a metadata request made with ``config``."""
    try:
        AdminClient(dict(config)).list_topics(timeout=METADATA_TIMEOUT_SECONDS)
    except KafkaException:
        return False
    return True


_watches: dict[tuple[str, ...], _ConnectionWatch] = {}
_watches_lock = threading.Lock()


def _watch_for(settings: Settings) -> _ConnectionWatch:
    """The process's watch of the cluster at ``settings.kafka.brokers``, shared by its clients."""
    key = tuple(settings.kafka.brokers)
    # What the recheck's metadata request uses: the clients' settings, logs structured
    # (an admin client's are never served: it is not polled).
    config = {
        "bootstrap.servers": ",".join(key),
        **settings.kafka.kafka_extra_config,
        "logger": _client_logger(),
    }
    with _watches_lock:
        watch = _watches.get(key)
        if watch is None:
            watch = _watches[key] = _ConnectionWatch(key, config)
        else:
            watch.config = config
        return watch
