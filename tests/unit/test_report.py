"""The report's pure parts: the confidence interval against published values, percentiles, local
time spans across DST, parameters, and the renderers (escaping, a self-contained HTML page)."""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, datetime
from html.parser import HTMLParser
from zoneinfo import ZoneInfo

import pytest

from cloud_bridge.core.report import (
    CampaignInfo,
    InvalidReportQuery,
    LiftSubject,
    MemberVisits,
    OfferTally,
    Report,
    ReportQuery,
    StoreInfo,
    campaign_reports,
    check_return_days,
    lift,
    members_figures,
    newcombe_interval,
    offset_spans,
    parse_bound,
    percentile,
    store_visits,
    time_in_store,
    wilson_interval,
)
from cloud_bridge.core.report_render import CSV_SECTIONS, to_csv, to_html, to_text

# Newcombe, R. G. (1998). Interval estimation for the difference between independent
# proportions: comparison of eleven methods. Statistics in Medicine 17, 873-890. Table II,
# method 10 (score interval for each proportion, no continuity correction), examples (a)-(h).
NEWCOMBE_TABLE_II = [
    ((56, 70, 48, 80), (0.0524, 0.3339)),
    ((9, 10, 3, 10), (0.1705, 0.8090)),
    ((6, 7, 2, 7), (0.0582, 0.8062)),
    ((5, 56, 0, 29), (-0.0381, 0.1926)),
    ((0, 10, 0, 20), (-0.1611, 0.2775)),
    ((0, 10, 0, 10), (-0.2775, 0.2775)),
    ((10, 10, 0, 20), (0.6791, 1.0000)),
    ((10, 10, 0, 10), (0.6075, 1.0000)),
]


@pytest.mark.parametrize(("counts", "published"), NEWCOMBE_TABLE_II)
def test_newcombes_hybrid_score_interval_matches_his_table(
    counts: tuple[int, int, int, int], published: tuple[float, float]
) -> None:
    x1, n1, x2, n2 = counts

    d, low, high = newcombe_interval(x1, n1, x2, n2)

    assert d == pytest.approx(x1 / n1 - x2 / n2)
    assert (round(low, 4), round(high, 4)) == published


def test_wilsons_interval_matches_newcombes_single_proportion_examples() -> None:
    # Newcombe (1998b), "Two-sided confidence intervals for the single proportion", Table I,
    # method 3 (Wilson score): 81/263 -> 0.2553 to 0.3662; 15/148 -> 0.0624 to 0.1605.
    assert tuple(round(v, 4) for v in wilson_interval(81, 263)) == (0.2553, 0.3662)
    assert tuple(round(v, 4) for v in wilson_interval(15, 148)) == (0.0624, 0.1605)
    assert wilson_interval(0, 20)[0] == 0.0 and wilson_interval(20, 20)[1] == 1.0


def test_the_nearest_rank_percentile() -> None:
    values = [15.0, 20.0, 35.0, 40.0, 50.0]  # the classic example: p30 = 20, p40 = 20, p50 = 35

    assert [percentile(values, p) for p in (5, 30, 40, 50, 100)] == [15.0, 20.0, 20.0, 35.0, 50.0]
    assert percentile([], 50) is None


def test_offset_spans_cut_at_each_dst_change_to_the_second() -> None:
    zone = ZoneInfo("America/New_York")
    start = datetime(2026, 10, 1, tzinfo=UTC).timestamp()
    end = datetime(2027, 4, 1, tzinfo=UTC).timestamp()

    spans = offset_spans(zone, start, end)

    fall = datetime(2026, 11, 1, 6, 0, tzinfo=UTC).timestamp()  # 02:00 EDT = 06:00Z
    spring = datetime(2027, 3, 14, 7, 0, tzinfo=UTC).timestamp()  # 02:00 EST = 07:00Z
    assert spans == [
        (start, fall, -4 * 3600),
        (fall, spring, -5 * 3600),
        (spring, end, -4 * 3600),
    ]
    kolkata = offset_spans(ZoneInfo("Asia/Kolkata"), start, end)
    assert kolkata == [(start, end, 5 * 3600 + 1800)]
    assert offset_spans(zone, end, start) == []


def test_period_bounds_are_local_per_store_and_an_end_date_is_included() -> None:
    start = parse_bound("2026-11-01", "from", end=False)
    end = parse_bound("2026-11-30", "to", end=True)
    instant = parse_bound("2026-11-01T08:00:00Z", "from", end=False)

    ny, tokyo = ZoneInfo("America/New_York"), ZoneInfo("Asia/Tokyo")
    assert start.at(ny) == datetime(2026, 11, 1, tzinfo=ny).timestamp()
    assert start.at(tokyo) == datetime(2026, 11, 1, tzinfo=tokyo).timestamp()
    assert end.at(ny) == datetime(2026, 12, 1, tzinfo=ny).timestamp()
    assert instant.at(ny) == instant.at(tokyo) == datetime(2026, 11, 1, 8, tzinfo=UTC).timestamp()
    assert parse_bound("2026-11-01T09:30", "from", end=False).at(ny) == (
        datetime(2026, 11, 1, 9, 30, tzinfo=ny).timestamp()
    )


@pytest.mark.parametrize("text", ["", "yesterday", "2026-13-01", "2026-11-01T25:00", "1e9"])
def test_a_bad_bound_names_its_parameter(text: str) -> None:
    with pytest.raises(InvalidReportQuery) as caught:
        parse_bound(text, "to", end=True)
    assert caught.value.field == "to"


@pytest.mark.parametrize("days", [0, -1, 367])
def test_return_days_outside_a_year_are_refused(days: int) -> None:
    with pytest.raises(InvalidReportQuery) as caught:
        check_return_days(days)
    assert caught.value.field == "return_days"


def test_members_figures_by_hand() -> None:
    day = 86400.0
    rows = [
        MemberVisits("a", 3, 0.0, True, 10 * day),  # came back on day 10
        MemberVisits("b", 1, 0.0, False, 31 * day),  # too late
        MemberVisits("c", 2, 0.0, False, 30 * day),  # exactly 30 days: counts
        MemberVisits("d", 12, 50 * day, True, 51 * day),  # window not over at the horizon
    ]

    m = members_figures(rows, horizon=60 * day, return_days=30)

    assert (m.unique, m.returning, m.new, m.visits) == (4, 2, 2, 18)
    assert m.return_rate == 0.5 and m.mean_visits == 4.5 and m.median_visits == 2.5
    assert dict(m.frequency) == {"1": 1, "2": 1, "3": 1, "4": 0, "5-9": 0, "10-19": 1, "20+": 0}
    assert (m.cohort_eligible, m.cohort_came_back) == (3, 2)


def test_lift_by_hand_and_its_empty_groups() -> None:
    subjects = [
        LiftSubject("c", "t1", False, 0.0, True, True),
        LiftSubject("c", "t2", False, 0.0, False, False),
        LiftSubject("c", "k1", True, 0.0, False, False),
        LiftSubject("c", "late", True, 1e9, True, False),
    ]

    result = lift(subjects, horizon=40 * 86400.0, return_days=30)
    nobody = lift([], horizon=0.0, return_days=30)

    assert (result.treatment, result.control, result.pending) == (2, 1, 1)
    assert (result.treatment_rate, result.control_rate, result.relative) == (0.5, 0.0, None)
    assert result.difference == 0.5 and result.redemption_rate == 0.5
    assert not nobody.enough and nobody.difference is None and nobody.treatment_rate is None


def small_report(title: str = "Free coffee") -> Report:
    store = StoreInfo("s1", "Main <Street>", "Europe/Berlin")
    t0 = datetime(2026, 11, 1, tzinfo=ZoneInfo("Europe/Berlin")).timestamp()
    hours = [((int(t0) + 3600) // 3600 + 1, 4), ((int(t0) + 3600) // 3600 + 30, 2)]
    visits = store_visits(store, t0, t0 + 3 * 86400, hours)
    tallies = [
        OfferTally("c1", "mqtt", "received", 10, 10, 10, 6, 1, 3),
        OfferTally("c1", "webhook", "dead", 2, 0, 0, 0, 0, 0),
        OfferTally("c1", "mqtt", "holdout", 5, 0, 0, 0, 0, 0),
    ]
    subjects = [LiftSubject("c1", f"m{i}", i >= 6, t0, i % 2 == 0, i == 0) for i in range(10)]
    campaigns = campaign_reports(
        [CampaignInfo("c1", title, 20.0, "active")], tallies, subjects, t0 + 90 * 86400, 30
    )
    members = members_figures([MemberVisits("m0", 2, t0, False, None)], t0, 30)
    return Report(
        ReportQuery(),
        t0,
        (visits,),
        members,
        (time_in_store("", [60.0, 400.0, 9000.0]), time_in_store("s1", [60.0, 400.0, 9000.0])),
        campaigns,
        visits.by_hour,
    )


class _Page(HTMLParser):
    """Collects tags, attributes that load something, and the text."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.loads: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        for name, value in attrs:
            if name in ("src", "href", "xlink:href", "action") and value is not None:
                self.loads.append(value)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


HOSTILE = '<script>alert("x")</script><img src="https://evil.example/a.png" onerror=alert(1)>'


def test_the_html_page_is_self_contained_with_charts_and_escapes_a_hostile_title() -> None:
    page = to_html(small_report(title=HOSTILE))

    parsed = _Page()
    parsed.feed(page)
    parsed.close()
    assert "script" not in parsed.tags and "img" not in parsed.tags
    assert parsed.loads == []  # no src or href at all: nothing fetched from anywhere
    assert "url(" not in page and "@import" not in page  # nor from the style sheet
    # The only URL anywhere is the hostile title's, and it is text, not an attribute.
    assert set(re.findall(r"https?://[^\s\"&]+", page)) == {"https://evil.example/a.png"}
    assert parsed.tags.count("svg") >= 5  # by day, by hour, stay, frequency, funnel, lift
    assert HOSTILE in "".join(parsed.text)  # shown to the reader as text
    assert "Main <Street>" in "".join(parsed.text)
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")


def test_csv_has_every_section_with_its_columns_and_defuses_formulas() -> None:
    report = small_report(title='=HYPERLINK("http://evil")')

    whole = to_csv(report)
    lift_only = to_csv(report, "lift")

    names = [line[2:] for line in whole.splitlines() if line.startswith("# ")]
    assert names == list(CSV_SECTIONS)
    rows = list(csv.reader(io.StringIO(lift_only)))
    assert tuple(rows[0]) == CSV_SECTIONS["lift"]
    assert rows[1][0] == "c1" and rows[1][2:4] == ["6", "3"]  # treatment 6, 3 came back
    campaign = list(csv.reader(io.StringIO(to_csv(report, "campaigns"))))[1]
    assert campaign[1].startswith("'=")  # a spreadsheet shows it, never runs it


def test_the_text_summary_says_what_a_marketer_asks() -> None:
    text = to_text(small_report())

    assert "Free coffee" in text
    assert "decided 17, sent 10" in text
    assert "95 % CI" in text
    assert "came back within 30 days" in text
