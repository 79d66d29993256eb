"""The detector's Prometheus metrics: names, labels, bounded values, the endpoint."""

from __future__ import annotations

import socket
import threading
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from bytewax.connectors.kafka import KafkaSinkMessage, KafkaSourceMessage
from bytewax.testing import TestingSink, TestingSource, run_main
from prometheus_client.parser import text_string_to_metric_families

from detector.contracts import Alert, ModelQuality, ModelStatus, RejectReason
from detector.dataflow import build_flow, start_metrics
from detector.flow.kafka import Sinks
from detector.local.broker_config import find_free_ports
from detector.metrics import LABEL_SOURCES, DetectorMetrics, label_source
from detector.metrics.endpoint import MetricsServerError, metrics_port, serve
from detector.settings import DetectorSettings, Settings
from tests.factories import model_status
from tests.unit.test_dataflow import Feed, ordinary_traffic
from tests.unit.test_exploration import never_alerting

# The names the dashboards and alert rules use (deploy/prometheus, deploy/grafana).
EXPECTED: dict[str, set[str]] = {
    "fraudstream_transactions_total": {"decision"},
    "fraudstream_dead_letters_total": {"reason"},
    "fraudstream_alerts_total": {"decision"},
    "fraudstream_exploration_alerts_total": set(),
    "fraudstream_labels_total": {"source"},
    "fraudstream_processing_latency_seconds_bucket": {"le"},
    "fraudstream_event_time_lag_seconds_bucket": {"le"},
    "fraudstream_score_bucket": {"le"},
    "fraudstream_label_delay_seconds_bucket": {"source", "le"},
    "fraudstream_model_info": {"model", "version", "deciding"},
    "fraudstream_model_transactions_scored_total": {"model"},
    "fraudstream_model_labels_learned_total": {"model", "label"},
    "fraudstream_model_auc": {"model", "version"},
    "fraudstream_model_average_precision": {"model", "version"},
    "fraudstream_model_alert_precision": {"model", "version"},
    "fraudstream_model_alert_recall": {"model", "version"},
    "fraudstream_model_quality_window_labels": {"model", "version"},
    "fraudstream_model_quality_window_frauds": {"model", "version"},
    "fraudstream_model_quality_window_legit": {"model", "version"},
    "fraudstream_model_quality_window_alerts": {"model", "version"},
    "fraudstream_model_review_threshold": {"model"},
    "fraudstream_model_block_threshold": {"model"},
    "fraudstream_model_status_timestamp_seconds": {"model"},
    "fraudstream_state_cards": set(),
    "fraudstream_state_terminals": set(),
    "fraudstream_state_pending_labels": set(),
}


def samples(metrics: DetectorMetrics) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Every sample of the registry, by sample name."""
    from prometheus_client import generate_latest

    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(generate_latest(metrics.registry).decode()):
        for s in family.samples:
            out.setdefault(s.name, []).append((dict(s.labels), s.value))
    return out


def value(metrics: DetectorMetrics, name: str, **labels: str) -> float:
    found = [v for lab, v in samples(metrics).get(name, []) if lab == labels]
    assert len(found) == 1, (name, labels, samples(metrics).get(name))
    return found[0]


def status(
    model: str = "hybrid-tail-logreg",
    *,
    deciding: bool = True,
    auc: float | None = 0.9,
    scored: int = 100,
) -> ModelStatus:
    return model_status(
        model,
        model_version="1.2.3",
        deciding=deciding,
        transactions_scored=scored,
        decisions={"allow": scored},
        labels_learned={"fraud": 3, "legit": 40},
        labels_by_source={"analyst": 43},
        classifier_weight=0.5,
        quality={
            "window": 43,
            "frauds": 3,
            "auc": auc,
            "average_precision": 0.5 if auc is not None else None,
            "alert_recall": 0.25,
        },
        threshold_mode="fixed",
        review_share=None,
        block_share=None,
        emitted_at=datetime(2024, 1, 1, tzinfo=UTC),
    )


def test_every_metric_of_the_design_is_exposed_with_its_labels() -> None:
    m = DetectorMetrics()
    m.decided("review", 0.7, received=99.0, event_time=50.0, now=100.0)
    m.learned("analyst")
    m.label_delay_observed("chargeback", 3 * 86400)
    m.dead_letter(RejectReason.NOT_JSON)
    m.model_status(status())
    # the quality figures that are None are absent; make every one appear once
    m.model_status(
        status("hybrid-tail-tree", deciding=False).model_copy(
            update={
                "quality": ModelQuality(
                    window=10,
                    frauds=1,
                    auc=0.8,
                    average_precision=0.4,
                    alert_precision=0.5,
                    alert_recall=1.0,
                )
            }
        )
    )
    found = samples(m)
    for name, labels in EXPECTED.items():
        assert name in found, name
        for lab, _ in found[name]:
            assert set(lab) == labels, (name, lab)


def test_bounded_series_exist_at_zero_before_any_event() -> None:
    m = DetectorMetrics()
    found = samples(m)
    decisions = {lab["decision"] for lab, v in found["fraudstream_transactions_total"]}
    assert decisions == {"allow", "review", "block"}
    alerts = {lab["decision"] for lab, _ in found["fraudstream_alerts_total"]}
    assert alerts == {"review", "block"}
    reasons = {lab["reason"] for lab, _ in found["fraudstream_dead_letters_total"]}
    assert reasons == {r.value for r in RejectReason}
    sources = {lab["source"] for lab, _ in found["fraudstream_labels_total"]}
    assert sources == set(LABEL_SOURCES)
    assert all(v == 0 for lab, v in found["fraudstream_dead_letters_total"])
    # no model series before the first status
    assert "fraudstream_model_info" not in found


def test_label_sources_are_mapped_onto_four_values() -> None:
    assert [label_source(s) for s in ("analyst", "chargeback", "presumed")] == [
        "analyst",
        "chargeback",
        "presumed",
    ]
    m = DetectorMetrics()
    for source in ("issuer-bank-42", "manual_review", "chargeback", "x"):
        m.learned(source)
        m.label_delay_observed(source, 60.0)
    assert value(m, "fraudstream_labels_total", source="other") == 3
    assert value(m, "fraudstream_labels_total", source="chargeback") == 1
    assert value(m, "fraudstream_label_delay_seconds_count", source="other") == 3
    sources = {lab["source"] for lab, _ in samples(m)["fraudstream_labels_total"]}
    assert sources == set(LABEL_SOURCES)


def test_presumed_labels_have_no_delay_series() -> None:
    m = DetectorMetrics()
    m.label_delay_observed("presumed", 14 * 86400)
    delays = samples(m)["fraudstream_label_delay_seconds_count"]
    assert {lab["source"] for lab, _ in delays} == {"analyst", "chargeback", "other"}
    assert all(v == 0 for _, v in delays)


def test_a_decision_counts_and_observes_latency_lag_and_score() -> None:
    m = DetectorMetrics()
    m.decided("allow", 0.1, received=99.995, event_time=40.0, now=100.0)
    m.decided("block", 0.995, received=95.0, event_time=100.5, now=100.0)
    assert value(m, "fraudstream_transactions_total", decision="allow") == 1
    assert value(m, "fraudstream_transactions_total", decision="block") == 1
    assert value(m, "fraudstream_alerts_total", decision="block") == 1
    assert value(m, "fraudstream_alerts_total", decision="review") == 0
    assert value(m, "fraudstream_processing_latency_seconds_bucket", le="0.01") == 1
    assert value(m, "fraudstream_processing_latency_seconds_bucket", le="5.0") == 2
    assert value(m, "fraudstream_processing_latency_seconds_sum") == pytest.approx(5.005)
    # a transaction from the near future counts as no lag, not a negative one
    assert value(m, "fraudstream_event_time_lag_seconds_bucket", le="0.1") == 1
    assert value(m, "fraudstream_event_time_lag_seconds_sum") == pytest.approx(60.0)
    assert value(m, "fraudstream_score_bucket", le="0.1") == 1
    assert value(m, "fraudstream_score_bucket", le="0.99") == 1
    assert value(m, "fraudstream_score_bucket", le="0.999") == 2


def test_exploration_alerts_count_apart_from_the_alerts() -> None:
    m = DetectorMetrics()
    assert value(m, "fraudstream_exploration_alerts_total") == 0
    m.decided("allow", 0.01, received=99.0, event_time=99.0, now=100.0, exploration=True)
    assert value(m, "fraudstream_exploration_alerts_total") == 1
    assert value(m, "fraudstream_transactions_total", decision="allow") == 1
    assert sum(v for _, v in samples(m)["fraudstream_alerts_total"]) == 0


def test_histogram_buckets_span_the_agreed_ranges() -> None:
    found = samples(DetectorMetrics())

    def bounds(name: str) -> list[float]:
        return sorted(float(lab["le"]) for lab, _ in found[name] if lab["le"] != "+Inf")

    latency = bounds("fraudstream_processing_latency_seconds_bucket")
    assert (latency[0], latency[-1]) == (0.001, 60.0)
    lag = bounds("fraudstream_event_time_lag_seconds_bucket")
    assert (lag[0], lag[-1]) == (0.1, 7 * 86400)
    score = bounds("fraudstream_score_bucket")
    assert score[0] == 0.05 and score[-1] == 1.0
    assert {0.5, 0.9, 0.95, 0.99, 0.999} <= set(score)
    delay = sorted(
        {
            float(lab["le"])
            for lab, _ in found["fraudstream_label_delay_seconds_bucket"]
            if lab["le"] != "+Inf"
        }
    )
    assert (delay[0], delay[-1]) == (60.0, 90 * 86400)


def test_model_gauges_follow_the_last_status_of_each_model() -> None:
    m = DetectorMetrics()
    m.model_status(status("a", deciding=True, scored=10))
    m.model_status(status("b", deciding=False, auc=None, scored=10))
    assert value(m, "fraudstream_model_info", model="a", version="1.2.3", deciding="true") == 1
    assert value(m, "fraudstream_model_info", model="b", version="1.2.3", deciding="false") == 1
    assert value(m, "fraudstream_model_auc", model="a", version="1.2.3") == 0.9
    aucs = samples(m)["fraudstream_model_auc"]
    assert [lab["model"] for lab, _ in aucs] == ["a"], "an undefined AUC is absent, not 0"
    assert value(m, "fraudstream_model_labels_learned_total", model="a", label="fraud") == 3
    assert value(m, "fraudstream_model_quality_window_labels", model="b", version="1.2.3") == 43
    assert value(m, "fraudstream_model_review_threshold", model="a") == 0.6
    assert value(m, "fraudstream_model_block_threshold", model="a") == 0.9
    assert value(m, "fraudstream_model_status_timestamp_seconds", model="a") == 1704067200.0

    # an admin makes b decide: one info series per model, with the new flag
    m.model_status(status("b", deciding=True, scored=25))
    m.model_status(status("a", deciding=False, scored=25))
    infos = samples(m)["fraudstream_model_info"]
    assert sorted((lab["model"], lab["deciding"]) for lab, _ in infos) == [
        ("a", "false"),
        ("b", "true"),
    ]
    assert value(m, "fraudstream_model_transactions_scored_total", model="b") == 25


def test_state_sizes_are_summed_over_worker_threads() -> None:
    m = DetectorMetrics()

    def work(cards: int) -> None:
        slot = m.state.worker()
        slot.cards += cards
        slot.terminals += 1
        slot.pending += 10
        slot.parked += 2

    threads = [threading.Thread(target=work, args=(n,)) for n in (1, 2, 3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    work(4)
    assert m.state.totals() == (10, 4, 40, 8)
    assert value(m, "fraudstream_state_cards") == 10
    assert value(m, "fraudstream_state_pending_labels") == 40
    assert value(m, "fraudstream_state_parked_labels") == 8


def test_the_flow_updates_the_metrics() -> None:
    feed = Feed()
    sent = ordinary_traffic(feed, 12)
    feed.raw(b"{not json")
    feed.transaction(sent[3])  # a duplicate
    feed.label(sent[4], "fraud", "analyst")
    feed.label(sent[5], "legit", "issuer-x")
    m = DetectorMetrics()
    out: list[KafkaSinkMessage[bytes | None, bytes | None]] = []
    sinks = Sinks(*(TestingSink(out) for _ in range(4)))
    settings = Settings(
        detector=DetectorSettings(status_interval_seconds=1e-6, max_message_bytes=1024)
    )
    run_main(build_flow(settings, source=TestingSource(feed.messages), sinks=sinks, metrics=m))

    decided = sum(v for _, v in samples(m)["fraudstream_transactions_total"])
    assert decided == 12
    alerts = sum(v for _, v in samples(m)["fraudstream_alerts_total"])
    non_allow = sum(
        v for lab, v in samples(m)["fraudstream_transactions_total"] if lab["decision"] != "allow"
    )
    assert alerts == non_allow
    assert value(m, "fraudstream_dead_letters_total", reason="not_json") == 1
    assert value(m, "fraudstream_dead_letters_total", reason="duplicate") == 1
    assert value(m, "fraudstream_labels_total", source="analyst") == 1
    assert value(m, "fraudstream_labels_total", source="other") == 1
    # labelled two days after the transaction
    assert value(m, "fraudstream_label_delay_seconds_sum", source="analyst") == 2 * 86400
    assert value(m, "fraudstream_processing_latency_seconds_count") == 12
    assert value(m, "fraudstream_event_time_lag_seconds_count") == 12
    assert value(m, "fraudstream_score_count") == 12
    assert value(m, "fraudstream_state_cards") == 3
    assert value(m, "fraudstream_state_terminals") == 4
    assert value(m, "fraudstream_state_pending_labels") == 12
    model = "hybrid-tail-logreg"
    assert value(m, "fraudstream_model_transactions_scored_total", model=model) == 12
    learned = samples(m)["fraudstream_model_labels_learned_total"]
    assert sum(v for _, v in learned) == 2


def test_the_flow_counts_the_exploration_sample_apart() -> None:
    feed = Feed()
    ordinary_traffic(feed, 40)
    m = DetectorMetrics()
    out: list[KafkaSinkMessage[bytes | None, bytes | None]] = []
    sinks = Sinks(*(TestingSink(out) for _ in range(4)))
    settings = Settings(scoring=never_alerting(0.5))
    run_main(build_flow(settings, source=TestingSource(feed.messages), sinks=sinks, metrics=m))

    explored = value(m, "fraudstream_exploration_alerts_total")
    assert 5 <= explored <= 35
    assert value(m, "fraudstream_transactions_total", decision="allow") == 40
    assert sum(v for _, v in samples(m)["fraudstream_alerts_total"]) == 0
    alerts = [Alert.model_validate_json(msg.value) for msg in out if b'"alert_id"' in msg.value]
    assert len(alerts) == explored and all(a.exploration for a in alerts)


def test_the_kafka_record_time_is_the_start_of_the_processing_latency() -> None:
    feed = Feed()
    ordinary_traffic(feed, 1)
    written = datetime.now(UTC) - timedelta(seconds=20)
    msg = feed.messages[0]
    feed.messages[0] = KafkaSourceMessage(
        key=msg.key,
        value=msg.value,
        topic=msg.topic,
        partition=0,
        offset=0,
        timestamp=(1, int(written.timestamp() * 1000)),  # CreateTime, in ms
    )
    m = DetectorMetrics()
    sinks = Sinks(*(TestingSink([]) for _ in range(4)))
    run_main(build_flow(Settings(), source=TestingSource(feed.messages), sinks=sinks, metrics=m))
    assert 20 <= value(m, "fraudstream_processing_latency_seconds_sum") < 30


# --- the endpoint --------------------------------------------------------------------


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield int(s.getsockname()[1])


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return str(response.read().decode())


def test_the_endpoint_serves_the_detector_and_the_default_registry() -> None:
    import bytewax.connectors.kafka  # noqa: F401  registers bytewax_kafka_consumer_lag

    m = DetectorMetrics()
    m.decided("allow", 0.2, received=1.0, event_time=1.0, now=2.0)
    server = serve("127.0.0.1", 0, m)
    try:
        text = scrape(f"http://127.0.0.1:{server.port}/metrics")
    finally:
        server.stop()
    assert 'fraudstream_transactions_total{decision="allow"} 1.0' in text
    assert "# TYPE bytewax_kafka_consumer_lag gauge" in text
    assert "python_info" in text


def test_a_port_in_use_gives_a_plain_message(taken_port: int) -> None:
    with pytest.raises(MetricsServerError) as caught:
        serve("127.0.0.1", taken_port, DetectorMetrics())
    message = str(caught.value)
    assert f"127.0.0.1:{taken_port}" in message
    assert "already in use" in message
    assert "FRAUDSTREAM_METRICS_PORT" in message


def test_the_detector_exits_with_that_message_not_a_traceback(taken_port: int) -> None:
    settings = Settings(detector=DetectorSettings(metrics_port=taken_port))
    with pytest.raises(SystemExit) as caught:
        start_metrics(settings)
    assert "already in use" in str(caught.value.code)


def test_an_unknown_host_gives_a_plain_message() -> None:
    with pytest.raises(MetricsServerError, match="FRAUDSTREAM_METRICS_HOST"):
        serve("no-such-host.invalid", find_free_ports(1)[0], DetectorMetrics())


def test_port_zero_disables_the_endpoint() -> None:
    assert start_metrics(Settings(detector=DetectorSettings(metrics_port=0))) is None


def test_processes_of_a_cluster_on_one_host_take_the_next_ports() -> None:
    assert metrics_port(3030, None) == 3030
    one_host = ["127.0.0.1:2101", "127.0.0.1:2102", "127.0.0.1:2103"]
    assert [metrics_port(3030, i, one_host) for i in range(3)] == [3030, 3031, 3032]
    pods = ["detector-0.svc:2101", "detector-1.svc:2101", "detector-2.svc:2101"]
    assert [metrics_port(3030, i, pods) for i in range(3)] == [3030, 3030, 3030]
    two_hosts = ["a:2101", "b:2101", "a:2102", "b:2102"]
    assert [metrics_port(3030, i, two_hosts) for i in range(4)] == [3030, 3030, 3031, 3031]
    with pytest.raises(MetricsServerError, match="beyond 65535"):
        metrics_port(65535, 1, one_host)


def test_start_metrics_serves_on_the_configured_address() -> None:
    port = find_free_ports(1)[0]
    cluster = "127.0.0.1:2101;127.0.0.1:2102"
    settings = Settings(
        detector=DetectorSettings(
            metrics_host="127.0.0.1", metrics_port=port - 1, process_id=1, addresses=cluster
        )
    )
    url = start_metrics(settings)
    assert url == f"http://127.0.0.1:{port}/metrics"
    assert "fraudstream_transactions_total" in scrape(url)


def test_the_fast_histogram_exposes_what_a_client_histogram_would() -> None:
    from prometheus_client import CollectorRegistry, Histogram, generate_latest

    from detector.metrics import SCORE_BUCKETS
    from detector.metrics.histogram import FastHistogram

    values = [0.0, 0.05, 0.049, 0.5, 0.9, 0.95, 0.99, 0.999, 1.0, 0.3333, 1.5]
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    fast = FastHistogram("fraudstream_score", "Scores.", SCORE_BUCKETS)
    ours.register(fast)
    reference = Histogram("fraudstream_score", "Scores.", buckets=SCORE_BUCKETS, registry=theirs)
    for value in values:
        fast.observe(value)
        reference.observe(value)

    def samples(registry: CollectorRegistry) -> list[str]:
        text = generate_latest(registry).decode()
        return [line for line in text.splitlines() if line and "_created" not in line]

    assert samples(ours) == samples(theirs)
