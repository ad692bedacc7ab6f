"""The waiting room: who waits for a loading model, until when, and where each partition's commit must stop."""

from __future__ import annotations

from aiokafka import TopicPartition

from streams.services.waiting import Overdue, WaitingRoom

A, B = TopicPartition("work", 0), TopicPartition("work", 1)


def test_the_commit_stops_at_each_partitions_lowest_waiting_offset_and_moves_on_as_they_leave():
    room: WaitingRoom[str] = WaitingRoom(30.0)
    for work, tp, offset in (("a7", A, 7), ("a3", A, 3), ("b5", B, 5)):
        room.park("m@v1", work, tp, offset, None, now=0.0, now_ms=0.0)
    room.park("m@v1", "a3 again", A, 3, None, now=0.0, now_ms=0.0)  # replayed: not parked twice
    assert room.held() == {A: 3, B: 5} and room.count("m@v1") == 3
    go, overdue = room.release(lambda model: True, {A, B}, now=1.0)
    assert go == {"m@v1": ["a7", "a3", "b5"]} and overdue == []
    assert room.held() == {} and not room and "m@v1" not in room


def test_a_request_leaves_at_its_deadline_or_the_rooms_bound_whichever_comes_first():
    room: WaitingRoom[str] = WaitingRoom(5.0)
    room.park("m@v1", "soon", A, 1, deadline_ms=1_000, now=100.0, now_ms=0.0)  # 1 s to go
    room.park("m@v1", "patient", A, 2, deadline_ms=None, now=100.0, now_ms=0.0)
    room.park("n@v1", "other", B, 1, deadline_ms=None, now=100.0, now_ms=0.0)
    loading = lambda model: False  # noqa: E731
    assert room.release(loading, {A, B}, now=100.5) == ({}, [])
    assert room.release(loading, {A, B}, now=101.0) == ({}, [Overdue("m@v1", "soon", True)])
    assert room.held() == {A: 2, B: 1}
    _, overdue = room.release(loading, {A, B}, now=105.0)
    assert sorted(overdue) == [Overdue("m@v1", "patient", False), Overdue("n@v1", "other", False)]
    assert room.held() == {}


def test_requests_of_a_partition_lost_to_a_rebalance_leave_for_its_new_owner_to_replay():
    room: WaitingRoom[str] = WaitingRoom(30.0)
    room.park("m@v1", "kept", A, 1, None, now=0.0, now_ms=0.0)
    room.park("m@v1", "lost", B, 1, None, now=0.0, now_ms=0.0)
    assert room.release(lambda model: True, {A}, now=0.0) == ({"m@v1": ["kept"]}, [])
    assert room.held() == {}
