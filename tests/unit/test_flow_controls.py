"""Control messages through the dataflow: thresholds, statuses, challengers, rejections."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from detector.contracts import Control, RejectReason, ThresholdChange
from tests.unit.test_dataflow import Feed, SinkMessage, ordinary_traffic, run, settings, tx


def control(control_id: str, **fields: Any) -> Control:
    return Control(
        control_id=control_id,
        requested_by="admin",
        requested_at=datetime.now(UTC),
        **fields,
    )


BLOCK_ALL = ThresholdChange(mode="fixed", review_threshold=0.0, block_threshold=0.0)


def test_a_control_message_changes_the_thresholds_and_shows_in_the_status() -> None:
    feed = Feed()
    ordinary_traffic(feed, 5)
    feed.control(control("block-all", action="set_thresholds", thresholds=BLOCK_ALL))
    out = run(feed)
    assert len(out.decisions) == 5
    assert out.dead_letters == []
    last = out.statuses[-1]
    assert last.last_control_id == "block-all"
    assert (last.threshold_mode, last.review_threshold, last.block_threshold) == (
        "fixed",
        0.0,
        0.0,
    )
    # The change applies to what comes next, without a restart.
    feed.transaction(tx("after", "card1", "term1", 12.0, minutes=1000))
    out = run(feed)
    assert next(d for d in out.decisions if d.transaction_id == "after").decision == "block"


def test_a_status_is_published_as_soon_as_a_control_is_applied() -> None:
    slow = settings(status_interval_seconds=3600)
    feed = Feed()
    ordinary_traffic(feed, 3)
    without = run(feed, slow).statuses
    feed.control(control("c1", action="set_thresholds", thresholds=BLOCK_ALL))
    with_control = run(feed, slow).statuses
    assert len(with_control) == len(without) + 1
    assert with_control[-1].last_control_id == "c1"


def test_invalid_and_rejected_controls_are_dead_letters() -> None:
    feed = Feed()
    ordinary_traffic(feed, 3)
    bad = feed.raw(b'{"control_id": "x", "action": "reboot"}', topic="control", key=b"model")
    feed.control(control("ghost", action="set_deciding_model", model_name="hybrid-tail-nope"))
    out = run(feed)
    assert len(out.decisions) == 3
    invalid, unknown = sorted(out.dead_letters, key=lambda d: d.offset is None)
    assert invalid.reason is RejectReason.INVALID
    assert (invalid.source_topic, invalid.offset, invalid.value) == (
        "control",
        bad.offset,
        bad.value,
    )
    assert "action" in invalid.error
    assert unknown.reason is RejectReason.INVALID
    assert unknown.source_topic == "control"
    assert "unknown model 'hybrid-tail-nope'" in unknown.error
    assert Control.model_validate_json(unknown.value).control_id == "ghost"
    assert {s.last_control_id for s in out.statuses} == {None}


def test_challengers_get_a_status_each_and_can_take_over() -> None:
    feed = Feed()
    ordinary_traffic(feed, 6)
    messages: list[SinkMessage] = []
    out = run(feed, settings(challengers=["tree"]), status_messages=messages)
    assert {d.model_name for d in out.decisions} == {"hybrid-tail-logreg"}
    assert {m.key for m in messages} == {b"hybrid-tail-logreg", b"hybrid-tail-tree"}
    for msg, status in zip(messages, out.statuses, strict=True):
        assert msg.key == status.model_name.encode()
    final = {s.model_name: s for s in out.statuses[-2:]}
    assert final["hybrid-tail-logreg"].deciding and not final["hybrid-tail-tree"].deciding
    assert all(s.transactions_scored == 6 for s in final.values())

    # Controls skip the card and terminal steps: what was sent after one is decided after it.
    feed.control(control("switch", action="set_deciding_model", model_name="hybrid-tail-tree"))
    feed.transaction(tx("after", "card1", "term1", 12.0, minutes=1000))
    out = run(feed, settings(challengers=["tree"]))
    assert next(d for d in out.decisions if d.transaction_id == "after").model_name == (
        "hybrid-tail-tree"
    )
    final = {s.model_name: s for s in out.statuses[-2:]}
    assert final["hybrid-tail-tree"].deciding and not final["hybrid-tail-logreg"].deciding
    assert {s.last_control_id for s in final.values()} == {"switch"}
