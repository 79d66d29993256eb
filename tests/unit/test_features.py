"""Feature state against small hand-computed cases: cards, terminals, pending features."""

from __future__ import annotations

import math
import pickle

import pytest

from models import (
    CARD_FEATURES,
    FEATURES,
    TERMINAL_FEATURES,
    CardProfile,
    PendingFeatures,
    TerminalProfile,
)

HOUR = 3600.0
DAY = 86400.0
T0 = 1_700_000_000.0  # an arbitrary epoch time (November 2023)


def card_with(events: list[tuple[float, float, str]], **params: float) -> CardProfile:
    card = CardProfile(**params)  # type: ignore[arg-type]
    for ts, amount, terminal in events:
        card.observe(ts, amount, terminal)
    return card


# --- CardProfile ---------------------------------------------------------------------


def test_card_features_have_the_published_names() -> None:
    x = CardProfile().features(T0, 10.0, "t1")
    assert tuple(x) == CARD_FEATURES
    assert FEATURES == CARD_FEATURES + TERMINAL_FEATURES


def test_first_transaction_of_a_card() -> None:
    x = CardProfile().features(T0, 50.0, "t1")
    assert x == {
        "amount": 50.0,
        "log_amount": math.log1p(50.0),
        "card_tx_1h": 0.0,
        "card_tx_24h": 0.0,
        "card_tx_7d": 0.0,
        "card_amount_24h": 0.0,
        "card_history_tx": 0.0,
        "card_mean_amount": 50.0,
        "card_amount_ratio": 1.0,
        "card_hours_since_last": 720.0,
        "card_new_terminal": 0.0,  # no history: nothing to be new against
        "card_amount_zscore": 0.0,
        "card_amount_ratio_7d": 1.0,
        "card_frauds_14d": 0.0,
        "card_max_ratio_7d": 1.0,
        "card_large_7d": 0.0,
    }


def test_card_windows_one_hour_one_day_seven_days_and_history() -> None:
    card = card_with(
        [
            (T0 - 31 * DAY, 1000.0, "t9"),  # beyond the 30-day history: forgotten
            (T0 - 8 * DAY, 10.0, "t1"),  # history only
            (T0 - 6 * DAY, 20.0, "t2"),  # 7d
            (T0 - 25 * HOUR, 30.0, "t1"),  # 7d
            (T0 - 23 * HOUR, 40.0, "t2"),  # 24h
            (T0 - 2 * HOUR, 50.0, "t1"),  # 24h
            (T0 - 30 * 60, 60.0, "t2"),  # 1h
        ]
    )
    assert len(card) == 6
    assert card.last_seen == T0 - 30 * 60
    x = card.features(T0, 105.0, "t3")
    assert x["card_tx_1h"] == 1.0
    assert x["card_tx_24h"] == 3.0
    assert x["card_tx_7d"] == 5.0
    assert x["card_history_tx"] == 6.0
    assert x["card_amount_24h"] == 40.0 + 50.0 + 60.0
    assert x["card_mean_amount"] == 35.0  # (10 + 20 + 30 + 40 + 50 + 60) / 6
    assert x["card_amount_ratio"] == 3.0
    assert x["card_hours_since_last"] == 0.5
    assert x["card_new_terminal"] == 1.0
    assert card.features(T0, 35.0, "t1")["card_new_terminal"] == 0.0
    assert card.features(T0, 35.0, "t2")["card_amount_ratio"] == 1.0


def test_card_remembers_its_large_amounts_of_the_last_seven_days() -> None:
    habits = [(T0 - (20 - d) * DAY, 20.0, "t1") for d in range(10)]  # 20 a day, days -20..-11
    card = card_with([*habits, (T0 - 8 * DAY, 400.0, "t2")])  # large, but 8 days ago
    x = card.features(T0, 20.0, "t1")
    assert (x["card_max_ratio_7d"], x["card_large_7d"]) == (1.0, 0.0)  # nothing in 7 days
    card.observe(T0 - 3 * DAY, 100.0, "t3")  # 100 / (700 / 12) = 1.7: not large
    card.observe(T0 - DAY, 250.0, "t3")  # 250 / (950 / 13) = 3.4: large
    mean = (10 * 20.0 + 400.0 + 100.0 + 250.0) / 13
    x = card.features(T0, 20.0, "t1")
    assert x["card_max_ratio_7d"] == 250.0 / mean
    assert x["card_large_7d"] == 1.0  # 250 >= 2.5 x 73.1; 100 is not
    # a week later both have left the window
    assert card.features(T0 + 7 * DAY, 20.0, "t1")["card_large_7d"] == 0.0


def test_card_windows_include_their_boundary() -> None:
    card = card_with([(T0 - 7 * DAY, 10.0, "t1"), (T0 - DAY, 10.0, "t1"), (T0 - HOUR, 10.0, "t1")])
    x = card.features(T0, 10.0, "t1")
    assert (x["card_tx_1h"], x["card_tx_24h"], x["card_tx_7d"]) == (1.0, 2.0, 3.0)
    y = card.features(T0 + 1.0, 10.0, "t1")
    assert (y["card_tx_1h"], y["card_tx_24h"], y["card_tx_7d"]) == (0.0, 1.0, 2.0)


def test_card_features_do_not_change_the_profile() -> None:
    card = card_with([(T0 - HOUR, 10.0, "t1")])
    before = card.features(T0, 20.0, "t2")
    card.features(T0, 1e6, "t3")
    assert card.features(T0, 20.0, "t2") == before
    assert len(card) == 1


def test_hours_since_last_is_capped_at_thirty_days() -> None:
    card = card_with([(T0, 10.0, "t1")], history_days=90.0)
    assert card.features(T0 + 3 * HOUR, 10.0, "t1")["card_hours_since_last"] == 3.0
    assert card.features(T0 + 60 * DAY, 10.0, "t1")["card_hours_since_last"] == 720.0


def test_hours_since_last_from_a_transaction_at_epoch_zero() -> None:
    # Regression: a previous transaction at time 0.0 was taken for "no previous one".
    card = card_with([(0.0, 10.0, "t1")])
    assert card.features(2 * HOUR, 10.0, "t1")["card_hours_since_last"] == 2.0


def test_history_is_bound_by_days() -> None:
    card = card_with([(T0 - 3 * DAY, 10.0, "t1"), (T0 - 2 * DAY + 1, 30.0, "t2")], history_days=2)
    # Both events are still held (the first was observed before the second), but only
    # the one within two days of the new transaction counts.
    x = card.features(T0, 60.0, "t1")
    assert x["card_history_tx"] == 1.0
    assert x["card_mean_amount"] == 30.0
    assert x["card_amount_ratio"] == 2.0
    assert x["card_new_terminal"] == 1.0  # t1 was used, but more than 2 days ago
    # Observing forgets what fell out of the window.
    card.observe(T0, 60.0, "t1")
    assert len(card) == 2


def test_history_beyond_the_window_is_no_history() -> None:
    card = card_with([(T0 - 40 * DAY, 10.0, "t1")], history_days=30)
    x = card.features(T0, 500.0, "t2")
    assert x["card_history_tx"] == 0.0
    assert x["card_amount_ratio"] == 1.0
    assert x["card_new_terminal"] == 0.0
    assert x["card_hours_since_last"] == 720.0


def test_history_is_bound_by_max_events() -> None:
    card = card_with([(T0 + i * HOUR, float(i + 1), "t1") for i in range(5)], max_events=3)
    assert len(card) == 3
    x = card.features(T0 + 5 * HOUR, 8.0, "t1")
    assert x["card_history_tx"] == 3.0
    assert x["card_mean_amount"] == 4.0  # (3 + 4 + 5) / 3
    assert x["card_amount_ratio"] == 2.0


def test_late_transaction_ignores_what_came_after_it() -> None:
    card = card_with([(T0 - 2 * HOUR, 10.0, "t1"), (T0, 90.0, "t2")])
    x = card.features(T0 - HOUR, 10.0, "t2")
    assert x["card_history_tx"] == 1.0
    assert x["card_mean_amount"] == 10.0
    assert x["card_hours_since_last"] == 1.0
    assert x["card_new_terminal"] == 1.0  # t2 was used only later


def test_a_late_transaction_takes_its_place_in_time() -> None:
    card = card_with([(T0, 10.0, "t1"), (T0 - 2 * DAY, 30.0, "t2")])  # the second is late
    assert card.last_seen == T0
    x = card.features(T0 + HOUR, 20.0, "t2")
    assert (x["card_history_tx"], x["card_tx_24h"], x["card_tx_1h"]) == (2.0, 1.0, 1.0)
    assert x["card_hours_since_last"] == 1.0  # since the latest transaction, not the last to come
    assert x["card_mean_amount"] == 20.0
    assert x["card_new_terminal"] == 0.0


def test_max_events_bounds_every_window() -> None:
    card = card_with([(T0 + i * 60, float(i + 1), "t1") for i in range(5)], max_events=3)
    x = card.features(T0 + 300, 8.0, "t1")
    assert (x["card_tx_1h"], x["card_tx_24h"], x["card_tx_7d"]) == (3.0, 3.0, 3.0)
    assert x["card_amount_24h"] == 3.0 + 4.0 + 5.0


def test_card_state_survives_pickling() -> None:
    card = card_with([(T0 - DAY, 12.34, "t1"), (T0 - HOUR + 0.25, 1 / 3, "t2")])
    card.record_label("tx", T0 - DAY, is_fraud=True)
    restored = pickle.loads(pickle.dumps(card))
    assert restored.features(T0, 5.0, "t2") == card.features(T0, 5.0, "t2")
    assert restored.features(T0 - 2 * HOUR, 5.0, "t2") == card.features(T0 - 2 * HOUR, 5.0, "t2")
    assert pickle.dumps(restored) == pickle.dumps(card)


# --- TerminalProfile -----------------------------------------------------------------

H0 = 1_000_000 * HOUR  # an hour boundary


def terminal_with(hours: list[float], **params: float) -> TerminalProfile:
    terminal = TerminalProfile(**params)
    for hour in hours:
        terminal.observe(H0 + hour * HOUR)
    return terminal


@pytest.mark.parametrize("late", [False, True], ids=["in order", "late events"])
def test_a_terminal_pickles_compactly_and_comes_back_the_same(late: bool) -> None:
    hours = [h * 2.5 for h in range(270)]  # four weeks of a terminal busy every 2.5 hours
    if late:
        hours[100], hours[200] = hours[200], hours[100]
    terminal = terminal_with(hours)
    terminal.record_label("tx-1", H0 + 600 * HOUR, is_fraud=True)
    again: TerminalProfile = pickle.loads(pickle.dumps(terminal))
    assert list(again._volume.items()) == list(terminal._volume.items())
    now = H0 + 700 * HOUR
    assert again.features(now) == terminal.features(now)
    again.observe(now)  # and it goes on as the original would
    terminal.observe(now)
    assert again.features(now + HOUR) == terminal.features(now + HOUR)
    # Two bytes an hour with a transaction, or four with late events, plus a constant.
    assert len(pickle.dumps(terminal)) < (4 if late else 2) * len(terminal._volume) + 300


def test_terminal_features_have_the_published_names() -> None:
    x = TerminalProfile().features(H0)
    assert tuple(x) == TERMINAL_FEATURES
    assert all(value == 0.0 for value in x.values())


def test_terminal_volume_in_hourly_buckets() -> None:
    terminal = terminal_with([20, 100, 150, 190, 199, 199.5])
    x = terminal.features(H0 + 200 * HOUR)
    # Buckets 0-23 hours old count in 24h, 0-167 hours old in 7 days.
    assert x["terminal_tx_24h"] == 3.0  # hours 190, 199, 199.5
    assert x["terminal_tx_7d"] == 5.0  # all but hour 20 (180 hours old)
    assert x["terminal_fraud_share_28d"] == 0.0


def test_terminal_frauds_seven_and_twenty_eight_days_and_share() -> None:
    terminal = terminal_with([20, 100, 150, 190, 199, 199.5])
    terminal.record_label("a", H0 + 20 * HOUR, is_fraud=True)  # 7.5 days before: 28d only
    terminal.record_label("b", H0 + 190 * HOUR, is_fraud=True)
    terminal.record_label("c", H0 + 199 * HOUR, is_fraud=False)
    assert terminal.frauds_held == 2
    x = terminal.features(H0 + 200 * HOUR)
    assert x["terminal_frauds_7d"] == 1.0
    assert x["terminal_frauds_28d"] == 2.0
    assert x["terminal_fraud_share_28d"] == pytest.approx(2 / 6)


def test_a_verdict_changed_to_legit_removes_the_fraud() -> None:
    terminal = terminal_with([0, 1])
    terminal.record_label("a", H0, is_fraud=True)
    assert terminal.features(H0 + 2 * HOUR)["terminal_frauds_7d"] == 1.0
    terminal.record_label("a", H0, is_fraud=False)
    x = terminal.features(H0 + 2 * HOUR)
    assert (x["terminal_frauds_7d"], x["terminal_frauds_28d"]) == (0.0, 0.0)
    assert terminal.frauds_held == 0
    terminal.record_label("never-seen", H0, is_fraud=False)  # harmless
    assert terminal.frauds_held == 0


def test_labels_never_count_before_their_transaction_time() -> None:
    terminal = terminal_with([0, 10, 20])
    terminal.record_label("late", H0 + 20 * HOUR, is_fraud=True)
    # A transaction scored (or replayed) before the fraudulent one does not see it.
    before = terminal.features(H0 + 15 * HOUR)
    assert before["terminal_frauds_7d"] == 0.0 and before["terminal_frauds_28d"] == 0.0
    assert before["terminal_tx_24h"] == 2.0  # nor the volume that came after it
    at = terminal.features(H0 + 20 * HOUR)
    assert at["terminal_frauds_7d"] == 1.0


def test_terminal_fraud_windows_include_their_boundary() -> None:
    terminal = terminal_with([0])
    terminal.record_label("a", H0, is_fraud=True)
    assert terminal.features(H0 + 7 * DAY)["terminal_frauds_7d"] == 1.0
    assert terminal.features(H0 + 7 * DAY + 1)["terminal_frauds_7d"] == 0.0
    assert terminal.features(H0 + 28 * DAY)["terminal_frauds_28d"] == 1.0
    assert terminal.features(H0 + 28 * DAY + 1)["terminal_frauds_28d"] == 0.0


def test_terminal_forgets_volume_and_frauds_beyond_its_history() -> None:
    terminal = terminal_with([0, 1], history_days=2)
    terminal.record_label("a", H0, is_fraud=True)
    terminal.observe(H0 + 3 * DAY)
    assert terminal.frauds_held == 0
    x = terminal.features(H0 + 3 * DAY + HOUR)
    assert x["terminal_tx_7d"] == 1.0  # only the latest transaction is still counted
    assert x["terminal_frauds_28d"] == 0.0


# --- PendingFeatures -----------------------------------------------------------------


def test_pending_record_and_get_in_name_order() -> None:
    store = PendingFeatures(("a", "b", "c"))
    store.record("tx1", T0, {"c": 3.0, "a": 1.0, "ignored": 9.0})
    assert store.get("tx1") == {"a": 1.0, "b": 0.0, "c": 3.0}  # missing values are 0
    assert list(store.get("tx1") or {}) == ["a", "b", "c"]
    assert store.get("unknown") is None
    assert len(store) == 1


def test_pending_mark_labelled_keeps_the_features_for_a_later_verdict() -> None:
    store = PendingFeatures(("a",), presume_legit_days=1)
    store.record("tx1", T0, {"a": 1.0})
    store.mark_labelled("tx1")
    store.mark_labelled("unknown")  # harmless
    assert store.get("tx1") == {"a": 1.0}
    assert store.expire(T0 + 2 * DAY) == []  # a labelled transaction is never presumed


def test_pending_expire_by_horizon() -> None:
    store = PendingFeatures(("a",), horizon_days=2)
    store.record("old", T0, {"a": 1.0})
    store.record("new", T0 + DAY, {"a": 2.0})
    assert store.expire(T0 + 2 * DAY) == []  # exactly two days old: still kept
    assert len(store) == 2
    assert store.expire(T0 + 2.5 * DAY) == []
    assert store.get("old") is None
    assert store.get("new") == {"a": 2.0}


def test_pending_expire_by_max_entries_drops_the_oldest() -> None:
    store = PendingFeatures(("a",), max_entries=2)
    for i in range(4):
        store.record(f"tx{i}", T0 + i, {"a": float(i)})
    store.expire(T0 + 4)
    assert len(store) == 2
    assert store.get("tx0") is None and store.get("tx1") is None
    assert store.get("tx3") == {"a": 3.0}


def test_pending_presumes_legit_once_and_only_when_old_enough() -> None:
    store = PendingFeatures(("a",), horizon_days=45, presume_legit_days=1)
    store.record("a", T0, {"a": 1.0})
    store.record("labelled", T0 + 0.2 * DAY, {"a": 2.0})
    store.record("b", T0 + 0.5 * DAY, {"a": 3.0})
    store.mark_labelled("labelled")
    assert store.expire(T0 + 0.9 * DAY) == []
    assert store.expire(T0 + 1.1 * DAY) == [("a", {"a": 1.0})]
    assert store.expire(T0 + 1.1 * DAY) == []
    assert store.expire(T0 + 1.5 * DAY) == [("b", {"a": 3.0})]
    assert store.expire(T0 + 10 * DAY) == []
    # Presumed entries still answer a real (late) verdict.
    assert store.get("a") == {"a": 1.0}


def test_pending_without_presumption_presumes_nothing() -> None:
    store = PendingFeatures(("a",))
    store.record("a", T0, {"a": 1.0})
    assert store.expire(T0 + 40 * DAY) == []
    assert store.get("a") == {"a": 1.0}


def test_card_amount_zscore_and_confirmed_frauds() -> None:
    card = card_with([(T0 - 3 * DAY, 10.0, "t1"), (T0 - 2 * DAY, 30.0, "t1")])
    # mean 20, population std 10: 50 is three deviations above
    assert card.features(T0, 50.0, "t1")["card_amount_zscore"] == 3.0
    card.record_label("old", T0 - 20 * DAY, is_fraud=True)  # outside 14 days
    card.record_label("recent", T0 - 2 * DAY, is_fraud=True)
    card.record_label("cleared", T0 - 1 * DAY, is_fraud=True)
    card.record_label("cleared", T0 - 1 * DAY, is_fraud=False)  # verdict overturned
    assert card.features(T0, 20.0, "t1")["card_frauds_14d"] == 1.0


def test_terminal_fraud_rate_among_labelled_transactions() -> None:
    t = TerminalProfile()
    for i in range(10):
        t.observe(T0 - (i + 1) * DAY)
    for i in range(4):  # four verdicts known, one of them fraud, all within 7 days
        t.record_label(f"tx{i}", T0 - (i + 1) * DAY, is_fraud=i == 0)
    t.record_label("tx9", T0 - 10 * DAY, is_fraud=True)  # in 28 days, not in 7
    x = t.features(T0)
    assert x["terminal_frauds_2d"] == 1.0  # tx0, a day old: the freshest verdicts
    assert x["terminal_fraud_rate_7d"] == 1 / 4
    assert x["terminal_fraud_rate_14d"] == 2 / 5
    assert x["terminal_fraud_rate_28d"] == 2 / 5
