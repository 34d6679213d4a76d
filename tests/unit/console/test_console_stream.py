"""Per-client backpressure of the stream: a client that keeps up gets the shared frames; one
that falls behind gets one diff of the latest state of what it missed; nothing grows without
bound."""

from __future__ import annotations

from ecokit.console.hub import MAX_EVENTS, MAX_FRAMES, ClientFeed, Coalesced, _frame_type


def drain(feed: ClientFeed) -> list[bytes | Coalesced]:
    out = []
    while (item := feed.next()) is not None:
        out.append(item)
    return out


def test_a_client_that_keeps_up_gets_every_shared_frame_as_is() -> None:
    feed = ClientFeed()
    feed.offer_diff(b"d1", ["a"], [])
    assert drain(feed) == [b"d1"]
    feed.offer_diff(b"d2", ["b"], [])
    feed.offer_diff(b"d3", ["c"], ["z"])
    assert drain(feed) == [b"d2", b"d3"]
    assert feed.coalesced == 0


def test_a_client_that_falls_behind_gets_one_diff_of_everything_it_missed() -> None:
    feed = ClientFeed()
    for n in range(MAX_FRAMES):
        feed.offer_diff(f"d{n}".encode(), [f"v{n}"], [])
    for n in range(MAX_FRAMES, 50):
        feed.offer_diff(f"d{n}".encode(), [f"v{n % 7}", "shared"], ["gone"] if n == 30 else [])
    items = drain(feed)
    assert len(items) == 1
    only = items[0]
    assert isinstance(only, Coalesced)
    assert only.ids == frozenset({*(f"v{n}" for n in range(7)), "shared"})
    assert only.removed == frozenset({"gone"})
    assert feed.coalesced == 50
    # Caught up again: back to shared frames.
    feed.offer_diff(b"next", ["a"], [])
    assert drain(feed) == [b"next"]


def test_memory_is_bounded_by_the_number_of_vehicles_not_by_time() -> None:
    feed = ClientFeed()
    for n in range(10_000):
        feed.offer_diff(b"x" * 100, [f"v{n % 20}"], [])
    assert len(feed.frames) == 0
    assert len(feed.ids) == 20


def test_commands_keep_their_latest_state_and_events_are_capped() -> None:
    feed = ClientFeed()
    feed.offer_command("c1", b"c1-sent")
    feed.offer_command("c2", b"c2-sent")
    feed.offer_command("c1", b"c1-succeeded")
    for n in range(MAX_EVENTS + 5):
        feed.offer_event(str(n).encode())
    feed.offer_stats(b"s1")
    feed.offer_stats(b"s2")
    feed.offer_ping(b"p")
    items = drain(feed)
    assert items[:2] == [b"c2-sent", b"c1-succeeded"]
    assert items[2:2 + MAX_EVENTS] == [str(n).encode() for n in range(5, MAX_EVENTS + 5)]
    assert items[-2:] == [b"s2", b"p"]
    assert feed.events_dropped == 5


def test_vehicle_diffs_go_before_everything_else() -> None:
    feed = ClientFeed()
    feed.offer_stats(b"s")
    feed.offer_command("c", b"c")
    feed.offer_diff(b"d", ["a"], [])
    assert drain(feed) == [b"d", b"c", b"s"]


def test_frame_type_is_read_from_the_serialised_frame() -> None:
    assert _frame_type(b'{"type":"diff","ts":1}') == "diff"
    assert _frame_type(b'{"other":1}') == "other"
