"""The demo's summary, scored against the simulation's truth: per platform, and the whole visit."""

from __future__ import annotations

from edge.demo.runner import duration_text, summarise
from edge.sim.entrance import GroundTruth, Person, SimDevice

T0 = 1_790_000_000.0


def person(n: int, role: str, platform: str, door_s: float, exit_s: float | None) -> Person:
    kind = "tag" if platform == "tag" else "app"
    device = SimDevice(f"d-{n}", f"m-{n}", bytes([n]) * 16, 10, kind)
    exit_time = None if exit_s is None else T0 + exit_s
    return Person(f"p-{n}", role, device, False, T0 + door_s, exit_time, platform=platform)


TRUTH = GroundTruth(
    (
        person(1, "entering", "android", 10, 310),  # 300 s in store
        person(2, "entering", "ios", 20, 210),  # 190 s
        person(3, "entering", "ios", 30, 400),  # not recognised
        person(4, "entering", "tag", 40, 2000),  # leaves after the run
        person(5, "passing", "ios", 50, None),
    ),
    T0,
    T0 + 1200,
)


def test_the_summary_counts_each_platform_against_the_truth() -> None:
    summary = summarise(TRUTH, ["m-1", "m-2", "m-4"], [], [], {})
    assert summary["by_platform"] == {
        "android": {"entered": 1, "recognised": 1},
        "ios": {"entered": 2, "recognised": 1},
        "tag": {"entered": 1, "recognised": 1},
    }
    assert summary["members_recognised"] == 3 and summary["passers_by_entered"] == 0
    assert summarise(TRUTH, ["m-5"], [], [], {})["passers_by_entered"] == 1


def test_time_in_store_is_compared_with_the_truth_for_the_same_members() -> None:
    ends = [("m-1", 320.0), ("m-2", 180.0), (None, 50.0)]  # None: a pseudonym nobody was given
    summary = summarise(TRUTH, ["m-1", "m-2", "m-4"], [], [], {}, visit_ends=ends)
    assert summary["visits_ended"] == 3
    assert summary["time_in_store_s_p50"] == 180.0  # median of 320, 180, 50
    assert summary["time_in_store_s_p50_truth"] == 245.0  # median of m-1's 300 and m-2's 190


def test_without_visit_ends_there_is_no_time_in_store() -> None:
    summary = summarise(TRUTH, [], [], [], {"extra": 1})
    assert summary["visits_ended"] == 0
    assert summary["time_in_store_s_p50"] is summary["time_in_store_s_p50_truth"] is None
    assert summary["extra"] == 1


def test_durations_read_as_minutes_and_seconds() -> None:
    assert duration_text(42.4) == "42 s"
    assert duration_text(245.0) == "4 min 05 s"
