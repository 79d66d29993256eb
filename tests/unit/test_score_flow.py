"""Score requests through the Bytewax flow in process: the same state, one decision per
transaction, and a reply for each request (its decision, or ``duplicate``)."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime

from bytewax.testing import TestingSink, TestingSource, run_main

from detector.contracts import DeadLetter, Decision, ScoreReply, ScoreRequest, Transaction
from detector.dataflow import build_flow
from detector.flow.kafka import Sinks
from detector.items import RequestedTransaction
from detector.settings import Settings
from tests.unit.test_dataflow import Feed, SinkMessage, settings, tx, values

REQUESTS = "score-requests"


def request(t: Transaction, request_id: str) -> ScoreRequest:
    return ScoreRequest(
        request_id=request_id, transaction=t, requested_at=datetime(2024, 1, 1, tzinfo=UTC)
    )


def ask(feed: Feed, t: Transaction, request_id: str) -> None:
    value = request(t, request_id).model_dump_json().encode()
    feed.raw(value, topic=REQUESTS, key=t.card_id.encode())


def run_flow(
    feed: Feed, config: Settings | None = None
) -> tuple[list[Decision], list[ScoreReply], list[SinkMessage], list[DeadLetter]]:
    out: dict[str, list[SinkMessage]] = {
        name: [] for name in ("decisions", "alerts", "dead_letters", "model_status", "replies")
    }
    sinks = Sinks(
        decisions=TestingSink(out["decisions"]),
        alerts=TestingSink(out["alerts"]),
        dead_letters=TestingSink(out["dead_letters"]),
        model_status=TestingSink(out["model_status"]),
        score_replies=TestingSink(out["replies"]),
    )
    run_main(build_flow(config or settings(), source=TestingSource(feed.messages), sinks=sinks))
    return (
        [Decision.model_validate_json(v) for v in values(out["decisions"])],
        [ScoreReply.model_validate_json(v) for v in values(out["replies"])],
        out["replies"],
        [DeadLetter.model_validate_json(v) for v in values(out["dead_letters"])],
    )


def test_a_requested_transaction_is_decided_once_and_replied_with_its_decision() -> None:
    feed = Feed()
    first = [tx(f"tx{i}", "card1", f"term{i % 2}", 10.0 + i, minutes=10 * i) for i in range(5)]
    for t in first:
        feed.transaction(t)
    asked = tx("asked", "card1", "term9", 900.0, minutes=60)
    ask(feed, asked, "req-1")
    feed.transaction(tx("after", "card1", "term0", 12.0, minutes=70))

    decisions, replies, messages, dead = run_flow(feed)

    assert [d.transaction_id for d in decisions] == [
        "tx0",
        "tx1",
        "tx2",
        "tx3",
        "tx4",
        "asked",
        "after",
    ]
    [reply] = replies
    assert (reply.request_id, reply.status, reply.card_id, reply.transaction_id) == (
        "req-1",
        "decided",
        "card1",
        "asked",
    )
    # The reply's decision is the one published on decisions, and it counted in the card's
    # state: the next transaction saw it (seven decisions, the model scored seven).
    assert reply.decision == next(d for d in decisions if d.transaction_id == "asked")
    assert messages[0].key == b"card1"
    assert dead == []


def test_a_transaction_decided_on_request_is_a_duplicate_on_transactions() -> None:
    feed = Feed()
    t = tx("once", "card2", "term1", 50.0, minutes=0)
    ask(feed, t, "req-a")
    feed.transaction(t)  # the payment system publishes it as well
    ask(feed, t, "req-b")  # and asks again, in another request

    decisions, replies, _, dead = run_flow(feed)

    assert [d.transaction_id for d in decisions] == ["once"]
    assert [(r.request_id, r.status) for r in replies] == [
        ("req-a", "decided"),
        ("req-b", "duplicate"),
    ]
    assert replies[1].decision is None and replies[1].transaction_id == "once"
    assert sorted((d.reason.value, d.source_topic) for d in dead) == [
        ("duplicate", REQUESTS),
        ("duplicate", "transactions"),
    ]


def test_a_request_for_a_transaction_decided_from_transactions_replies_duplicate() -> None:
    feed = Feed()
    t = tx("seen", "card3", "term1", 20.0, minutes=0)
    feed.transaction(t)
    ask(feed, t, "req-late")

    decisions, replies, _, dead = run_flow(feed)

    assert [d.transaction_id for d in decisions] == ["seen"]
    assert [(r.request_id, r.status) for r in replies] == [("req-late", "duplicate")]
    [letter] = dead
    assert letter.source_topic == REQUESTS
    assert ScoreRequest.model_validate_json(letter.value).request_id == "req-late"


def test_invalid_score_requests_are_dead_lettered_and_not_replied() -> None:
    feed = Feed()
    good = tx("ok", "card4", "term1", 20.0, minutes=0)
    bad_amount = request(good, "req-x").model_dump_json().replace('"amount":20.0', '"amount":-1')
    future = request(tx("fut", "card4", "term1", 5.0, minutes=60 * 24 * 365 * 900), "req-f")
    feed.raw(bad_amount.encode(), topic=REQUESTS)
    feed.raw(b"{not json", topic=REQUESTS)
    feed.raw(b'{"request_id": "r", "transaction": {}}', topic=REQUESTS)
    feed.raw(future.model_dump_json().encode(), topic=REQUESTS)
    ask(feed, good, "req-ok")

    decisions, replies, _, dead = run_flow(feed)

    assert [d.transaction_id for d in decisions] == ["ok"]
    assert [r.request_id for r in replies] == ["req-ok"]
    assert [(d.reason.value, d.source_topic) for d in dead] == [
        ("invalid", REQUESTS),
        ("not_json", REQUESTS),
        ("invalid", REQUESTS),
        ("future_timestamp", REQUESTS),
    ]
    assert "transaction.amount" in dead[0].error


def test_the_request_id_rides_with_the_transaction_across_workers() -> None:
    # Items cross workers (and processes) pickled: the request id must survive that, and
    # stay out of every serialised form of the transaction.
    t = tx("tx-p", "card5", "term1", 9.5, minutes=0)
    requested = RequestedTransaction.of(request(t, "req-p"))
    copy = pickle.loads(pickle.dumps(requested))
    assert isinstance(copy, RequestedTransaction) and copy.request_id == "req-p"
    assert copy.model_dump_json() == t.model_dump_json()
    assert Transaction.model_validate_json(copy.model_dump_json()) == t
