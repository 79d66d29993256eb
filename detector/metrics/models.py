"""The model metrics, read at scrape time from the last status of each model."""

from __future__ import annotations

import threading
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from detector.contracts import ModelStatus


class ModelCollector(Collector):
    """The model metrics, read from the last status of each model at scrape time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last: dict[str, ModelStatus] = {}

    def update(self, status: ModelStatus) -> None:
        with self._lock:
            self._last[status.model_name] = status

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            statuses = list(self._last.values())
        info = GaugeMetricFamily(
            "fraudstream_model_info",
            "1 per model of the detector; deciding is true for the model that decides.",
            labels=["model", "version", "deciding"],
        )
        scored = CounterMetricFamily(
            "fraudstream_model_transactions_scored",
            "Transactions the model scored (deciding or in shadow).",
            labels=["model"],
        )
        learned = CounterMetricFamily(
            "fraudstream_model_labels_learned",
            "Labels the model learned from, by class.",
            labels=["model", "label"],
        )
        quality = {
            name: GaugeMetricFamily(f"fraudstream_model_{name}", text, labels=["model", "version"])
            for name, text in (
                ("auc", "ROC AUC of the model's scores over its quality window."),
                ("average_precision", "Average precision over the quality window."),
                ("alert_precision", "Share of the window's alerted transactions that were fraud."),
                ("alert_recall", "Share of the window's frauds that the model alerted."),
                ("quality_window_labels", "Labelled transactions in the quality window."),
                ("quality_window_frauds", "Frauds among the quality window's labels."),
                ("quality_window_legit", "Legitimate transactions among the window's labels."),
                ("quality_window_alerts", "Labelled transactions in the window that were alerted."),
            )
        }
        review = GaugeMetricFamily(
            "fraudstream_model_review_threshold",
            "Score at or above which the model reviews.",
            labels=["model"],
        )
        block = GaugeMetricFamily(
            "fraudstream_model_block_threshold",
            "Score at or above which the model blocks.",
            labels=["model"],
        )
        emitted = GaugeMetricFamily(
            "fraudstream_model_status_timestamp_seconds",
            "Unix time of the model's last status.",
            labels=["model"],
        )
        policy = {
            name: GaugeMetricFamily(f"fraudstream_{name}", text, labels=labels)
            for name, text, labels in (
                ("policy_mode", "1 for the global mode in force, else 0.", ["mode"]),
                ("block_share", "Share of blocks in the block cap's window.", []),
                ("max_block_share", "The cap on the share of blocks (1: no cap).", []),
                ("block_cap_tripped", "1 while the block cap turns blocks into reviews.", []),
                ("list_entries", "Entries in force on each allow and block list.", ["list"]),
            )
        }
        for s in statuses:
            if s.deciding and s.policy is not None:
                p = s.policy
                for mode in ("normal", "review_only", "monitor"):
                    policy["policy_mode"].add_metric([mode], 1 if p.mode == mode else 0)
                policy["block_share"].add_metric([], p.block_share)
                policy["max_block_share"].add_metric([], p.max_block_share)
                policy["block_cap_tripped"].add_metric([], 1 if p.block_cap_tripped else 0)
                for name, size in p.list_sizes.items():
                    policy["list_entries"].add_metric([name], size)
        for s in statuses:
            model, version = s.model_name, s.model_version
            info.add_metric([model, version, "true" if s.deciding else "false"], 1)
            scored.add_metric([model], s.transactions_scored)
            for label in ("fraud", "legit"):
                learned.add_metric([model, label], s.labels_learned.get(label, 0))
            q = s.quality
            figures = {
                "auc": q.auc,
                "average_precision": q.average_precision,
                "alert_precision": q.alert_precision,
                "alert_recall": q.alert_recall,
                "quality_window_labels": q.window,
                "quality_window_frauds": q.frauds,
                "quality_window_legit": q.legit,
                "quality_window_alerts": q.alerts,
            }
            # A figure over fewer labels than its minimum is null in the status: its gauge
            # is absent (Grafana shows "too few labels"), never a figure on a handful.
            for name, value in figures.items():
                if value is not None:
                    quality[name].add_metric([model, version], value)
            review.add_metric([model], s.review_threshold)
            block.add_metric([model], s.block_threshold)
            emitted.add_metric([model], s.emitted_at.timestamp())
        yield from (info, scored, learned, *quality.values(), review, block, emitted)
        yield from policy.values()
