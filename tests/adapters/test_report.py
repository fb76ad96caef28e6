"""The report's figures on a real SQLite loyalty database holding a designed history whose answers
are known (tests/report_history.py counts them from the design, not with the code under test)."""

from __future__ import annotations

import hashlib
import statistics
from collections import Counter
from datetime import date, datetime
from pathlib import Path

import pytest

from cloud_bridge.adapters.sqlite_report import build_report
from cloud_bridge.core.report import (
    InvalidReportQuery,
    Report,
    ReportQuery,
    parse_bound,
)
from cloud_bridge.errors import RecordsError
from tests.report_history import (
    NOW,
    PERIOD_FROM,
    PERIOD_TO,
    STORES,
    History,
    build_history,
    expected_by_day,
    expected_by_hour,
    expected_durations,
    expected_funnel,
    expected_members,
    nearest_rank,
    write_history,
)

HISTORY = build_history()


@pytest.fixture
async def database(tmp_path: Path) -> Path:
    path = tmp_path / "loyalty.db"
    await write_history(path, HISTORY)
    return path


def period(**overrides: object) -> ReportQuery:
    fields: dict[str, object] = {
        "start": parse_bound(PERIOD_FROM.isoformat(), "from", end=False),
        "end": parse_bound(PERIOD_TO.isoformat(), "to", end=True),
    }
    fields.update(overrides)
    return ReportQuery(**fields)  # type: ignore[arg-type]


def report_of(path: Path, query: ReportQuery | None = None, now: float = NOW) -> Report:
    return build_report(path, query or period(), now)


def test_visits_per_store_per_local_day_and_hour_are_the_designed_ones(database: Path) -> None:
    report = report_of(database)

    expected = expected_by_day(HISTORY)
    assert [s.store for s in report.stores] == sorted(STORES)
    for store in report.stores:
        got = {day: n for day, n in store.by_day if n}
        assert got == expected[store.store], store.store
        assert list(store.by_hour) == expected_by_hour(HISTORY, store.store), store.store
        # Every local day of the period is listed, days without visits as 0.
        assert store.by_day[0][0] == PERIOD_FROM.isoformat()
        assert store.by_day[-1][0] == PERIOD_TO.isoformat()
        assert len(store.by_day) == (PERIOD_TO - PERIOD_FROM).days + 1
    assert report.visits == sum(v.in_period for v in HISTORY.visits)


async def test_local_days_and_hours_follow_each_stores_dst_change(tmp_path: Path) -> None:
    h = History()
    h.visit("a", "ny", datetime(2026, 10, 31, 23, 30))  # EDT (UTC-4): 03:30Z on 1 Nov
    h.visit("a", "ny", datetime(2026, 11, 1, 0, 30))  # EDT
    h.visit("a", "ny", datetime(2026, 11, 1, 23, 30))  # EST (UTC-5): 04:30Z on 2 Nov
    h.visit("b", "berlin", datetime(2026, 10, 25, 3, 30))  # CET, after the change at 03:00
    h.visit("b", "berlin", datetime(2026, 10, 24, 23, 45))  # CEST
    h.visit("c", "delhi", datetime(2026, 10, 20, 0, 10))  # +05:30: 18:40Z on 19 Oct
    path = tmp_path / "dst.db"
    await write_history(path, h)

    report = report_of(path)

    stores = {s.store: s for s in report.stores}
    ny = {d: n for d, n in stores["ny"].by_day if n}
    assert ny == {"2026-10-31": 1, "2026-11-01": 2}
    assert (stores["ny"].by_hour[23], stores["ny"].by_hour[0]) == (2, 1)
    berlin = {d: n for d, n in stores["berlin"].by_day if n}
    assert berlin == {"2026-10-24": 1, "2026-10-25": 1}
    assert (stores["berlin"].by_hour[3], stores["berlin"].by_hour[23]) == (1, 1)
    assert {d: n for d, n in stores["delhi"].by_day if n} == {"2026-10-20": 1}
    assert stores["delhi"].by_hour[0] == 1


def test_members_returning_frequency_and_come_back_rate_are_the_designed_ones(
    database: Path,
) -> None:
    m = report_of(database).members

    e = expected_members(HISTORY)
    assert (m.unique, m.returning, m.new, m.visits) == (
        e.unique,
        e.returning,
        e.unique - e.returning,
        e.visits,
    )
    assert m.return_rate == pytest.approx(e.returning / e.unique)
    assert m.mean_visits == pytest.approx(e.visits / e.unique)
    assert m.median_visits == statistics.median(e.counts)
    freq = dict(m.frequency)
    assert freq["1"] == e.counts.count(1)
    assert freq["5-9"] == sum(1 for c in e.counts if 5 <= c <= 9)
    assert sum(freq.values()) == e.unique
    assert (m.cohort_eligible, m.cohort_came_back) == (e.eligible, e.came_back)
    assert m.cohort_rate == pytest.approx(e.came_back / e.eligible)
    assert 0 < e.returning < e.unique and 0 < e.came_back < e.eligible  # the design is not trivial


def test_time_in_store_counts_only_ended_visits_with_their_own_end(database: Path) -> None:
    report = report_of(database)

    everywhere = report.time_in_store[0]
    values = expected_durations(HISTORY)
    assert everywhere.store == ""
    assert everywhere.visits == len(values)  # the forged and orphan ends are not counted
    assert everywhere.median_s == nearest_rank(values, 50)
    assert everywhere.p90_s == nearest_rank(values, 90)
    assert everywhere.mean_s == pytest.approx(statistics.fmean(values))
    assert sum(everywhere.histogram) == len(values)
    assert everywhere.histogram[0] == sum(1 for v in values if v < 300)
    assert everywhere.histogram[-1] == sum(1 for v in values if v >= 7200)
    for t in report.time_in_store[1:]:
        per_store = expected_durations(HISTORY, t.store)
        assert (t.visits, t.median_s, t.p90_s) == (
            len(per_store),
            nearest_rank(per_store, 50),
            nearest_rank(per_store, 90),
        ), t.store


def test_the_campaign_funnel_states_and_channels_are_the_designed_ones(database: Path) -> None:
    campaigns = {c.campaign: c for c in report_of(database).campaigns}

    assert set(campaigns) == {"c-hold", "c-plain", "c-hostile"}
    for campaign, c in campaigns.items():
        e = expected_funnel(HISTORY, campaign)
        assert c.funnel.to_json() == {k: e[k] for k in c.funnel.to_json()}, campaign
        assert {s: n for s, n in c.states if n} == e["states"], campaign
        assert {ch: f.decided for ch, f in c.by_channel} == dict(e["channels"]), campaign
        assert c.conversion == pytest.approx(e["redeemed"] / e["sent"])
        assert c.open_rate == pytest.approx(e["opened"] / e["sent"])
    hold = campaigns["c-hold"]
    # Every delivery state is there: sent, received, expired, dead, pending, holdout, suppressed.
    assert all(n > 0 for _, n in hold.states)


def test_lift_against_the_holdout_is_newcombes_worked_example(database: Path) -> None:
    lift = {c.campaign: c.lift for c in report_of(database).campaigns}["c-hold"]

    # Designed: 70 offered, 56 came back within 30 days; 80 held out, 48 came back.
    assert (lift.treatment, lift.treatment_returned) == (70, 56)
    assert (lift.control, lift.control_returned) == (80, 48)
    assert lift.pending == 0
    assert lift.treatment_rate == pytest.approx(0.8)
    assert lift.control_rate == pytest.approx(0.6)
    assert lift.difference == pytest.approx(0.2)
    # Newcombe (1998), Table II, example (a), method 10.
    assert lift.ci_low == pytest.approx(0.0524, abs=5e-5)
    assert lift.ci_high == pytest.approx(0.3339, abs=5e-5)
    assert lift.relative == pytest.approx(0.8 / 0.6 - 1)
    redeemed = sum(
        1
        for o in HISTORY.offers
        if o.campaign == "c-hold" and o.redeemed and o.delivery != "holdout"
    )
    assert lift.treatment_redeemed == redeemed > 0
    assert lift.redemption_rate == pytest.approx(redeemed / 70)


def test_a_campaign_without_a_holdout_says_not_enough_data(database: Path) -> None:
    plain = {c.campaign: c for c in report_of(database).campaigns}["c-plain"]

    assert plain.lift.control == 0 and plain.lift.treatment > 0
    assert plain.lift.difference is None and plain.lift.ci_low is None
    assert plain.to_json()["lift"]["verdict"] == "not enough data"


def test_windows_not_ended_when_the_report_is_made_are_pending(database: Path) -> None:
    now = datetime(2026, 11, 20).timestamp()

    report = report_of(database, now=now)

    lift = {c.campaign: c.lift for c in report.campaigns}["c-hold"]
    subjects = [o for o in HISTORY.offers if o.campaign == "c-hold" and o.delivery != "suppressed"]
    first_visits = {o.visit.member: o.visit.ts for o in subjects}
    pending = sum(1 for ts in first_visits.values() if ts + 30 * 86400 > now)
    assert lift.pending == pending > 0
    assert lift.treatment + lift.control + lift.pending == 150
    e = expected_members(HISTORY, now=now)
    assert report.members.cohort_eligible == e.eligible < expected_members(HISTORY).eligible


def test_a_store_filter_keeps_its_visits_and_follows_returns_anywhere(database: Path) -> None:
    report = report_of(database, period(stores=("ny",)))

    assert [s.store for s in report.stores] == ["ny"]
    e = expected_members(HISTORY, stores=("ny",))
    assert (report.members.unique, report.members.returning) == (e.unique, e.returning)
    assert (report.members.cohort_eligible, report.members.cohort_came_back) == (
        e.eligible,
        e.came_back,
    )
    lift = {c.campaign: c.lift for c in report.campaigns}["c-hold"]
    at_ny = {
        o.visit.member: o.delivery == "holdout"
        for o in HISTORY.offers
        if o.campaign == "c-hold" and o.visit.store == "ny" and o.delivery != "suppressed"
    }
    # The designed outcome: members k < 56 (treatment) and 70 <= k < 118 (control) come back,
    # always at ANOTHER store, which a store filter must still see.
    back = {m for m in at_ny if (k := int(m[-3:])) < 56 or 70 <= k < 118}
    assert lift.treatment == sum(not c for c in at_ny.values())
    assert lift.control == sum(at_ny.values())
    assert lift.treatment_returned == sum(1 for m, c in at_ny.items() if not c and m in back)
    assert lift.control_returned == sum(1 for m, c in at_ny.items() if c and m in back)


def test_a_campaign_filter_reports_only_that_campaign(database: Path) -> None:
    report = report_of(database, period(campaigns=("c-plain",)))

    assert [c.campaign for c in report.campaigns] == ["c-plain"]
    assert report.members.unique == expected_members(HISTORY).unique  # visits are not filtered


def test_a_period_given_as_instants_is_the_same_everywhere(database: Path) -> None:
    query = ReportQuery(
        parse_bound("2026-10-25T00:00:00Z", "from", end=False),
        parse_bound("2026-11-02T12:00:00+01:00", "to", end=True),
    )
    start = datetime.fromisoformat("2026-10-25T00:00:00+00:00").timestamp()
    end = datetime.fromisoformat("2026-11-02T12:00:00+01:00").timestamp()

    report = report_of(database, query)

    assert report.visits == sum(1 for v in HISTORY.visits if start <= v.ts < end)
    assert {(s.start, s.end) for s in report.stores} == {(start, end)}


def test_unknown_stores_and_campaigns_are_named(database: Path) -> None:
    with pytest.raises(InvalidReportQuery) as store:
        report_of(database, period(stores=("ny", "mars")))
    with pytest.raises(InvalidReportQuery) as campaign:
        report_of(database, period(campaigns=("c-nope",)))

    assert store.value.field == "store" and "mars" in store.value.problem
    assert campaign.value.field == "campaign" and "c-nope" in campaign.value.problem


def test_the_report_reads_without_writing_and_never_creates_a_database(
    database: Path, tmp_path: Path
) -> None:
    def digest() -> str:
        return hashlib.sha256(database.read_bytes()).hexdigest()

    before = digest()
    report_of(database)
    assert digest() == before

    missing = tmp_path / "nowhere" / "loyalty.db"
    with pytest.raises(RecordsError, match="no loyalty database"):
        build_report(missing, period(), NOW)
    assert not missing.exists() and not missing.parent.exists()

    not_a_db = tmp_path / "notes.txt"
    not_a_db.write_text("hello")
    with pytest.raises(RecordsError):
        build_report(not_a_db, period(), NOW)


def test_an_empty_database_reports_zeros_not_errors(tmp_path: Path) -> None:
    import asyncio

    path = tmp_path / "empty.db"
    asyncio.run(write_history(path, History()))

    report = report_of(path)

    assert report.visits == 0 and report.members.unique == 0
    assert report.members.return_rate is None and report.time_in_store[0].median_s is None
    assert report.campaigns == ()
    assert Counter(n for s in report.stores for _, n in s.by_day) == Counter(
        {0: 3 * ((PERIOD_TO - PERIOD_FROM).days + 1)}
    )
    assert date.fromisoformat(report.stores[0].by_day[0][0]) == PERIOD_FROM


def test_a_database_older_than_the_reports_tables_is_refused_with_what_to_do(
    tmp_path: Path,
) -> None:
    import sqlite3

    old = tmp_path / "old.db"
    db = sqlite3.connect(old)
    db.execute("CREATE TABLE visits (event_id TEXT)")
    db.execute("PRAGMA user_version = 8")
    db.commit()
    db.close()

    with pytest.raises(RecordsError, match=r"schema version 8.*start the bridge once"):
        build_report(old, period(), NOW)


def test_a_store_with_a_bad_time_zone_or_forged_times_does_not_stop_the_report(
    database: Path,
) -> None:
    import sqlite3

    db = sqlite3.connect(database)
    with db:
        db.execute("UPDATE stores SET timezone = 'Mars/Olympus' WHERE id = 'delhi'")
        db.executemany(
            "INSERT INTO visits (event_id, member_id, device_id, store_id, gateway, ts, "
            "detected_at, recorded_at, rssi_dbm) VALUES (?, 'm-x', 'd-x', 'ny', 'g1', ?, 0, 0, 0)",
            [("v-past", -1e300), ("v-future", 1e300), ("v-inf", float("inf"))],
        )
    db.close()

    report = build_report(database, ReportQuery(), NOW)  # the whole history: no --from, no --to

    delhi = {s.store: s for s in report.stores}["delhi"]
    assert delhi.timezone == "UTC" and "Mars/Olympus" in delhi.note
    assert delhi.visits == sum(1 for v in HISTORY.visits if v.store == "delhi")
    assert report.visits == len(HISTORY.visits)  # the forged times are outside 2000..now
