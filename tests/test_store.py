"""Store: latest status per target, ordering, readiness."""

from __future__ import annotations

from dataclasses import replace

import pytest

from exporter.store import Store, TargetStatus, add_counts


def test_targets_start_with_an_initial_status() -> None:
    store = Store(["b", "a"])
    status = store.get("a")
    assert status == TargetStatus.initial("a")
    assert (status.snapshot, status.up, status.polls_success, status.polls_error) == (
        None,
        False,
        0,
        0,
    )
    assert dict(status.skipped_totals) == {}


def test_all_is_ordered_by_target() -> None:
    store = Store(["zeta", "alpha", "mid"])
    assert [s.target for s in store.all()] == ["alpha", "mid", "zeta"]


def test_publish_replaces() -> None:
    store = Store(["a"])
    newer = replace(TargetStatus.initial("a"), polls_error=1)
    store.publish(newer)
    assert store.get("a") is newer


def test_unknown_targets_are_errors() -> None:
    store = Store(["a"])
    with pytest.raises(KeyError):
        store.publish(TargetStatus.initial("b"))
    with pytest.raises(KeyError):
        store.get("b")


def test_ready_once_every_target_succeeded_once() -> None:
    store = Store(["a", "b"])
    assert not store.ready()
    assert store.waiting_for() == ("a", "b")
    store.publish(replace(TargetStatus.initial("a"), polls_success=1, up=True))
    assert not store.ready()
    assert store.waiting_for() == ("b",)
    store.publish(replace(TargetStatus.initial("b"), polls_success=1, up=True))
    assert store.ready()
    # Readiness is about having succeeded once, not about being up now.
    store.publish(replace(store.get("b"), up=False, polls_error=3))
    assert store.ready()


def test_store_without_targets_is_ready() -> None:
    assert Store([]).ready()


def test_add_counts() -> None:
    total = add_counts({"bad_json": 1}, {"bad_json": 2, "wrong_type": 1}, {}, {"class_limit": 4})
    assert dict(total) == {"bad_json": 3, "wrong_type": 1, "class_limit": 4}
    with pytest.raises(TypeError):
        total["x"] = 1  # type: ignore[index]
