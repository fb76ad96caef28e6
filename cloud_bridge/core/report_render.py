"""The report as text, CSV and one self-contained HTML page (inline CSS and SVG, no script, no
external asset), without I/O. Every text that came from the records (store and campaign names,
titles a marketer typed) is escaped: html.escape in the page, a leading quote in CSV cells a
spreadsheet would read as a formula."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from html import escape
from typing import Any

from cloud_bridge.core.report import (
    DELIVERY_STATES,
    DURATION_BIN_S,
    NOT_ENOUGH_DATA,
    CampaignReport,
    Lift,
    Report,
)

# --- CSV ----------------------------------------------------------------------------------------

#: Each CSV section and its columns (docs/reports.md describes them).
CSV_SECTIONS: dict[str, tuple[str, ...]] = {
    "stores": ("store", "name", "timezone", "from", "to", "visits"),
    "visits_by_day": ("store", "date", "visits"),
    "visits_by_hour": ("store", "hour", "visits"),
    "members": ("figure", "value"),
    "frequency": ("visits", "members"),
    "time_in_store": ("store", "visits", "median_s", "p90_s", "mean_s"),
    "campaigns": (
        "campaign",
        "title",
        "status",
        "holdout_pct",
        "decided",
        "sent",
        "received",
        "opened",
        "dismissed",
        "redeemed",
        *DELIVERY_STATES,
        "open_rate",
        "conversion",
    ),
    "channels": (
        "campaign",
        "channel",
        "decided",
        "sent",
        "received",
        "opened",
        "dismissed",
        "redeemed",
    ),
    "lift": (
        "campaign",
        "return_days",
        "treatment",
        "treatment_returned",
        "treatment_rate",
        "control",
        "control_returned",
        "control_rate",
        "pending",
        "difference",
        "ci95_low",
        "ci95_high",
        "relative_lift",
        "treatment_redeemed",
        "redemption_rate",
        "verdict",
    ),
}


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}" if not value.is_integer() or abs(value) >= 1e15 else str(value)
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value  # OWASP: a spreadsheet must not run a marketer's title as a formula
    return value


def csv_rows(report: Report, section: str) -> list[tuple[Any, ...]]:
    """The rows of one CSV section (without its header)."""
    if section == "stores":
        return [
            (s.store, s.name, s.timezone, _iso(s.start), _iso(s.end), s.visits)
            for s in report.stores
        ]
    if section == "visits_by_day":
        return [(s.store, day, n) for s in report.stores for day, n in s.by_day]
    if section == "visits_by_hour":
        return [(s.store, hour, n) for s in report.stores for hour, n in enumerate(s.by_hour)]
    if section == "members":
        m = report.members.to_json()
        came_back = m.pop("came_back")
        m.pop("frequency")
        rows = [(name, value) for name, value in m.items()]
        rows += [(f"came_back_{name}", value) for name, value in came_back.items()]
        return rows
    if section == "frequency":
        return list(report.members.frequency)
    if section == "time_in_store":
        return [
            (t.store or "*", t.visits, t.median_s, t.p90_s, t.mean_s) for t in report.time_in_store
        ]
    if section == "campaigns":
        return [
            (
                c.campaign,
                c.title,
                c.status,
                c.holdout_pct,
                *c.funnel.to_json().values(),
                *(dict(c.states).get(state, 0) for state in DELIVERY_STATES),
                c.open_rate,
                c.conversion,
            )
            for c in report.campaigns
        ]
    if section == "channels":
        return [
            (c.campaign, channel, *f.to_json().values())
            for c in report.campaigns
            for channel, f in c.by_channel
        ]
    if section == "lift":
        return [(c.campaign, *_lift_row(c.lift)) for c in report.campaigns]
    raise ValueError(f"no CSV section {section!r}")


def _lift_row(lift: Lift) -> tuple[Any, ...]:
    return (
        lift.days,
        lift.treatment,
        lift.treatment_returned,
        lift.treatment_rate,
        lift.control,
        lift.control_returned,
        lift.control_rate,
        lift.pending,
        lift.difference,
        lift.ci_low,
        lift.ci_high,
        lift.relative,
        lift.treatment_redeemed,
        lift.redemption_rate,
        "" if lift.enough else NOT_ENOUGH_DATA,
    )


def to_csv(report: Report, section: str | None = None) -> str:
    """One section as CSV (header, rows), or every section, each after a `# name` line."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    sections = [section] if section is not None else list(CSV_SECTIONS)
    for number, name in enumerate(sections):
        if section is None:
            if number:
                out.write("\r\n")
            out.write(f"# {name}\r\n")
        writer.writerow(CSV_SECTIONS[name])
        writer.writerows([_cell(v) for v in row] for row in csv_rows(report, name))
    return out.getvalue()


# --- text ---------------------------------------------------------------------------------------


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f} %"


def _signed_pts(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:+.1f} pts"


def _minutes(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds / 60:.1f} min"


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _period(report: Report) -> str:
    q = report.query
    start = "the first visit" if q.start is None else q.start.to_json()
    end = "now" if q.end is None else q.end.to_json()
    return f"{start} to {end} (each store's local time for dates)"


def to_text(report: Report) -> str:
    """A readable summary for a terminal."""
    m = report.members
    everywhere = report.time_in_store[0]
    lines = [
        f"Threshold report: {_period(report)}",
        f"Stores: {len(report.stores)}  Visits: {report.visits}",
        "",
        "Members",
        f"  unique {m.unique}, returning {m.returning} ({_pct(m.return_rate)}), new {m.new}",
        f"  visits per member: mean {_num(m.mean_visits)}, median {_num(m.median_visits)}",
        "  frequency: " + ", ".join(f"{label}: {n}" for label, n in m.frequency),
        f"  came back within {m.cohort_days} days: {m.cohort_came_back} of "
        f"{m.cohort_eligible} ({_pct(m.cohort_rate)})",
        "",
        f"Time in store ({everywhere.visits} ended visits): median "
        f"{_minutes(everywhere.median_s)}, p90 {_minutes(everywhere.p90_s)}",
        "",
        "Visits per store",
    ]
    width = max([len(s.store) for s in report.stores] + [5])
    times = {t.store: t for t in report.time_in_store[1:]}
    for s in report.stores:
        busiest = max(range(24), key=lambda h: s.by_hour[h]) if s.visits else None
        t = times.get(s.store)
        lines.append(
            f"  {s.store:<{width}}  {s.visits:>8} visits  {s.timezone:<20}  "
            f"busiest hour {'-' if busiest is None else f'{busiest:02d}:00'}  "
            f"median stay {_minutes(t.median_s if t else None)}"
            + (f"  ({s.note})" if s.note else "")
        )
    lines += ["", "Campaigns"]
    if not report.campaigns:
        lines.append("  none")
    for c in report.campaigns:
        f = c.funnel
        lines.append(
            f"  {c.campaign}: {_one_line(c.title)} ({c.status}, holdout {c.holdout_pct:g} %)"
        )
        lines.append(
            f"    decided {f.decided}, sent {f.sent}, received {f.received}, opened {f.opened}, "
            f"redeemed {f.redeemed}; open rate {_pct(c.open_rate)}, conversion {_pct(c.conversion)}"
        )
        states = ", ".join(f"{state} {n}" for state, n in c.states if n)
        lines.append(f"    delivery: {states or 'no offers'}")
        lines.append("    " + lift_sentence(c.lift))
    return "\n".join(lines) + "\n"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _one_line(text: str) -> str:
    return " ".join(text.split())[:120]


def lift_sentence(lift: Lift) -> str:
    """The lift in one sentence a marketer can read."""
    if not lift.enough:
        return (
            f"lift: {NOT_ENOUGH_DATA} (treatment {lift.treatment}, control {lift.control}, "
            f"{lift.pending} too recent to tell)"
        )
    return (
        f"lift: came back within {lift.days} days {_pct(lift.treatment_rate)} with the offer "
        f"(n={lift.treatment}) vs {_pct(lift.control_rate)} without (holdout, n={lift.control}): "
        f"{_signed_pts(lift.difference)}, 95 % CI {_signed_pts(lift.ci_low)} to "
        f"{_signed_pts(lift.ci_high)}; relative {_pct(lift.relative)}"
    )


# --- HTML ---------------------------------------------------------------------------------------

#: Visits per day as bars up to this many days, as a filled line beyond.
LONG_SERIES_DAYS = 62
_CSS = """
:root{--ink:#1f2933;--muted:#616e7c;--line:#e4e7eb;--bg:#f5f7fa;--card:#fff;--a:#2f6fdf;
--b:#15a3a3;--c:#f0a030;--good:#1f9d55;--bad:#d64545}
*{box-sizing:border-box}body{margin:0;font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,
sans-serif;color:var(--ink);background:var(--bg)}header{background:#102a43;color:#fff;
padding:28px 40px}header h1{margin:0 0 4px;font-size:26px}header p{margin:0;color:#bcccdc}
main{max-width:1180px;margin:0 auto;padding:24px 40px 60px}h2{margin:36px 0 12px;font-size:20px}
h3{margin:0 0 8px;font-size:16px}.cards{display:grid;grid-template-columns:repeat(auto-fit,
minmax(170px,1fr));gap:14px}.card{background:var(--card);border-radius:10px;padding:16px 18px;
box-shadow:0 1px 3px rgba(16,42,67,.12)}.card .v{font-size:28px;font-weight:650}.card .k{color:
var(--muted);font-size:13px}.panel{background:var(--card);border-radius:10px;padding:18px 20px;
box-shadow:0 1px 3px rgba(16,42,67,.12);margin-bottom:16px}.grid2{display:grid;
grid-template-columns:1fr 1fr;gap:16px}@media(max-width:900px){.grid2{grid-template-columns:1fr}}
svg{display:block;max-width:100%;height:auto}svg text{font:12px system-ui,sans-serif;fill:
var(--muted)}table{border-collapse:collapse;width:100%;font-size:14px}th,td{text-align:right;
padding:6px 10px;border-bottom:1px solid var(--line)}th:first-child,td:first-child{text-align:
left}th{color:var(--muted);font-weight:600}.note{color:var(--muted);font-size:13px}
.verdict{font-weight:600}.up{color:var(--good)}.down{color:var(--bad)}
"""


_LEFT, _BOTTOM, _TOP = 44, 28, 10  # a chart's margins: the value axis, the labels, the top


def _chart_frame(
    values: Sequence[int | float], title: str, width: int, height: int
) -> tuple[list[str], float, float, float]:
    """The opening of a chart with a value axis: its SVG parts so far (title, grid lines and
    their labels), the plot's width and height, and the axis's ceiling."""
    plot_w, plot_h = width - _LEFT - 8, height - _BOTTOM - _TOP
    peak = max([*values, 0]) or 1
    step = _nice_step(peak)
    ceiling = math.ceil(peak / step) * step
    parts = [
        f'<svg viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
    ]
    tick = 0.0
    while tick <= ceiling + 1e-9:
        y = _TOP + plot_h - plot_h * tick / ceiling
        parts.append(
            f'<line x1="{_LEFT}" x2="{width - 8}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e4e7eb"/>'
            f'<text x="{_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{_short(tick)}</text>'
        )
        tick += step
    return parts, plot_w, plot_h, ceiling


def _svg_bars(
    values: Sequence[int | float],
    labels: Sequence[str],
    *,
    title: str,
    color: str = "#2f6fdf",
    width: int = 540,
    height: int = 220,
    label_every: int = 1,
    tips: Sequence[str] | None = None,
) -> str:
    """A bar chart: one bar per value, labels under every `label_every`-th bar."""
    left, top = _LEFT, _TOP
    parts, plot_w, plot_h, ceiling = _chart_frame(values, title, width, height)
    n = max(len(values), 1)
    slot = plot_w / n
    bar = max(slot * 0.8, 0.5)
    for i, value in enumerate(values):
        h = plot_h * value / ceiling
        x = left + i * slot + (slot - bar) / 2
        tip = escape(tips[i] if tips else f"{labels[i]}: {value}")
        parts.append(
            f'<rect x="{x:.2f}" y="{top + plot_h - h:.2f}" width="{bar:.2f}" height="{h:.2f}" '
            f'fill="{color}" rx="1.5"><title>{tip}</title></rect>'
        )
        if i % label_every == 0:
            parts.append(
                f'<text x="{left + i * slot + slot / 2:.1f}" y="{height - 10}" '
                f'text-anchor="middle">{escape(labels[i])}</text>'
            )
    parts.append("</svg>")
    return "".join(parts)


def _svg_area(
    values: Sequence[int],
    labels: Sequence[str],
    *,
    title: str,
    color: str = "#2f6fdf",
    width: int = 1080,
    height: int = 220,
    label_every: int = 1,
) -> str:
    """A filled line chart for a long series (a day per point)."""
    left, top = _LEFT, _TOP
    parts, plot_w, plot_h, ceiling = _chart_frame(values, title, width, height)
    n = len(values)
    gap = plot_w / max(n - 1, 1)
    points = [(left + i * gap, top + plot_h - plot_h * v / ceiling) for i, v in enumerate(values)]
    line = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
    if points:
        base = top + plot_h
        parts.append(
            f'<polygon points="{points[0][0]:.1f},{base} {line} {points[-1][0]:.1f},{base}" '
            f'fill="{color}" fill-opacity="0.18"/>'
            f'<polyline points="{line}" fill="none" stroke="{color}" stroke-width="2" '
            'stroke-linejoin="round"/>'
        )
    for i, label in enumerate(labels):
        if i % label_every == 0:
            parts.append(
                f'<text x="{left + i * gap:.1f}" y="{height - 10}" text-anchor="middle">'
                f"{escape(label)}</text>"
            )
    parts.append("</svg>")
    return "".join(parts)


def _nice_step(peak: float) -> float:
    raw = peak / 4
    magnitude = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1
    for factor in (1, 2, 2.5, 5, 10):
        if raw <= factor * magnitude:
            return max(factor * magnitude, 1e-9)
    return 10 * magnitude


def _short(value: float) -> str:
    if value >= 1_000_000:
        return f"{value / 1_000_000:g}M"
    if value >= 1000:
        return f"{value / 1000:g}k"
    return f"{value:g}"


def _svg_funnel(c: CampaignReport, width: int = 540) -> str:
    """Horizontal bars: decided, sent, received, opened, redeemed (and held out)."""
    f = c.funnel
    steps = [
        ("Decided", f.decided, "#9fb3c8"),
        ("Sent", f.sent, "#2f6fdf"),
        ("Received", f.received, "#4c8be8"),
        ("Opened", f.opened, "#15a3a3"),
        ("Redeemed", f.redeemed, "#1f9d55"),
        ("Held out", dict(c.states).get("holdout", 0), "#f0a030"),
    ]
    row, left = 30, 90
    height = row * len(steps) + 8
    peak = max(f.decided, 1)
    plot = width - left - 110
    title = f"Offer funnel of {c.title}"
    parts = [
        f'<svg viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
    ]
    for i, (name, n, color) in enumerate(steps):
        y = 4 + i * row
        w = plot * n / peak
        share = (
            f" ({n / f.sent * 100:.0f} % of sent)"
            if f.sent and name in ("Opened", "Redeemed")
            else ""
        )
        parts.append(
            f'<text x="0" y="{y + 17}">{name}</text>'
            f'<rect x="{left}" y="{y}" width="{max(w, 1):.1f}" height="{row - 8}" rx="3" '
            f'fill="{color}"><title>{name}: {n}</title></rect>'
            f'<text x="{left + max(w, 1) + 6:.1f}" y="{y + 17}">{n}{share}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _svg_lift(lift: Lift, width: int = 540, height: int = 120) -> str:
    """The difference in return rates (treatment - control) as a point with its 95 % interval
    as an error bar, on an axis through zero."""
    title = "Lift in return rate against the holdout, with its 95 % confidence interval"
    if not lift.enough or lift.difference is None:
        return (
            f'<svg viewBox="0 0 {width} 60" role="img" aria-label="{escape(title)}"><title>'
            f'{escape(title)}</title><text x="{width / 2}" y="34" text-anchor="middle">'
            f"{NOT_ENOUGH_DATA}: treatment {lift.treatment}, holdout {lift.control}</text></svg>"
        )
    assert lift.ci_low is not None and lift.ci_high is not None
    span = max(abs(lift.ci_low), abs(lift.ci_high), 0.05) * 1.15
    left, right = 20, width - 20

    def x(value: float) -> float:
        return left + (value + span) / (2 * span) * (right - left)

    y = 50
    color = "#1f9d55" if lift.ci_low > 0 else "#d64545" if lift.ci_high < 0 else "#627d98"
    tip = escape(lift_sentence(lift))
    parts = [
        f'<svg viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
        f'<line x1="{left}" x2="{right}" y1="{y}" y2="{y}" stroke="#d9e2ec"/>',
        f'<line x1="{x(0):.1f}" x2="{x(0):.1f}" y1="18" y2="{y + 22}" stroke="#829ab1" '
        'stroke-dasharray="4 3"/>',
        f'<text x="{x(0):.1f}" y="12" text-anchor="middle">no effect</text>',
        f'<line x1="{x(lift.ci_low):.1f}" x2="{x(lift.ci_high):.1f}" y1="{y}" y2="{y}" '
        f'stroke="{color}" stroke-width="4"><title>{tip}</title></line>',
    ]
    for end in (lift.ci_low, lift.ci_high):
        parts.append(
            f'<line x1="{x(end):.1f}" x2="{x(end):.1f}" y1="{y - 10}" y2="{y + 10}" '
            f'stroke="{color}" stroke-width="3"/>'
            f'<text x="{x(end):.1f}" y="{y + 28}" text-anchor="middle">{_signed_pts(end)}</text>'
        )
    parts.append(
        f'<text x="{left}" y="{height - 6}">\u2190 fewer came back with the offer</text>'
        f'<text x="{right}" y="{height - 6}" text-anchor="end">more came back with the offer '
        "\u2192</text>"
    )
    parts.append(
        f'<circle cx="{x(lift.difference):.1f}" cy="{y}" r="8" fill="{color}"><title>{tip}'
        f"</title></circle>"
        f'<text x="{x(lift.difference):.1f}" y="{y - 16}" text-anchor="middle" '
        f'style="font-weight:600;fill:#1f2933">{_signed_pts(lift.difference)}</text>'
    )
    parts.append("</svg>")
    return "".join(parts)


def _table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{escape(str(v))}</td>" for v in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _card(value: str, label: str) -> str:
    return f'<div class="card"><div class="v">{escape(value)}</div><div class="k">{escape(label)}</div></div>'


def _verdict(lift: Lift) -> str:
    if not lift.enough or lift.ci_low is None or lift.ci_high is None:
        return f'<p class="verdict">{NOT_ENOUGH_DATA}: a treatment and a holdout group are both needed.</p>'
    if lift.ci_low > 0:
        word, css = "The offer brought members back more often than the holdout.", "up"
    elif lift.ci_high < 0:
        word, css = "Members offered it came back less often than the holdout.", "down"
    else:
        word, css = "No clear difference from the holdout yet (the interval includes zero).", ""
    return f'<p class="verdict {css}">{escape(word)}</p><p class="note">{escape(lift_sentence(lift))}</p>'


def _states(c: CampaignReport) -> str:
    return ", ".join(f"{state} {n}" for state, n in c.states if n) or "no offers"


def to_html(report: Report) -> str:
    """The report as one self-contained HTML page: no script, no external asset."""
    m = report.members
    everywhere = report.time_in_store[0]
    sent = sum(c.funnel.sent for c in report.campaigns)
    redeemed = sum(c.funnel.redeemed for c in report.campaigns)
    cards = "".join(
        [
            _card(f"{report.visits:,}", "visits"),
            _card(f"{m.unique:,}", "unique members"),
            _card(_pct(m.return_rate), "of them had visited before"),
            _card(_pct(m.cohort_rate), f"came back within {m.cohort_days} days"),
            _card(_minutes(everywhere.median_s), "median time in store"),
            _card(f"{sent:,}", "offers sent"),
            _card(f"{redeemed:,}", "offers redeemed"),
        ]
    )
    days = report.by_day()
    day_labels = [d for d, _ in days]
    every = max(1, math.ceil(len(days) / 8))
    if len(days) > LONG_SERIES_DAYS:
        by_day = _svg_area(
            [n for _, n in days],
            [d[5:] for d in day_labels],
            title="Visits per day (each store's local date)",
            label_every=every,
        )
    else:
        by_day = _svg_bars(
            [n for _, n in days],
            [d[5:] for d in day_labels],
            title="Visits per day (each store's local date)",
            label_every=every,
            width=1080,
            tips=[f"{d}: {n} visits" for d, n in days],
        )
    by_hour = _svg_bars(
        list(report.by_hour),
        [f"{h:02d}" for h in range(24)],
        title="Visits by hour of the day (local time)",
        color="#15a3a3",
        label_every=2,
        tips=[f"{h:02d}:00-{h:02d}:59: {n} visits" for h, n in enumerate(report.by_hour)],
    )
    bins = list(everywhere.histogram)
    bin_min = int(DURATION_BIN_S // 60)
    bin_labels = [f"{i * bin_min}" for i in range(len(bins) - 1)] + [
        f"{(len(bins) - 1) * bin_min}+"
    ]
    stay = _svg_bars(
        bins,
        bin_labels,
        title="Time in store (minutes), ended visits",
        color="#f0a030",
        label_every=3,
        tips=[
            f"{label} min: {n} visits" if i < len(bins) - 1 else f"over {label[:-1]} min: {n}"
            for i, (label, n) in enumerate(zip(bin_labels, bins, strict=True))
        ],
    )
    frequency = _svg_bars(
        [n for _, n in m.frequency],
        [label for label, _ in m.frequency],
        title="Members by number of visits in the period",
        color="#7b61ff",
    )
    times = {t.store: t for t in report.time_in_store[1:]}
    store_rows = [
        (
            f"{s.name} ({s.store})",
            f"{s.timezone} ({s.note})" if s.note else s.timezone,
            f"{s.visits:,}",
            max(range(24), key=lambda h: s.by_hour[h]) if s.visits else "-",
            _minutes(times[s.store].median_s if s.store in times else None),
            _minutes(times[s.store].p90_s if s.store in times else None),
        )
        for s in report.stores
    ]
    campaigns = []
    for c in report.campaigns:
        f = c.funnel
        campaigns.append(
            f'<div class="panel"><h3>{escape(c.title)} <span class="note">{escape(c.campaign)} · '
            f"{escape(c.status)} · holdout {c.holdout_pct:g} %</span></h3>"
            f'<div class="grid2"><div>{_svg_funnel(c)}<p class="note">open rate '
            f"{_pct(c.open_rate)} · conversion (redeemed / sent) {_pct(c.conversion)}</p></div>"
            f"<div><h3>Came back within {c.lift.days} days</h3>{_svg_lift(c.lift)}"
            f"{_verdict(c.lift)}</div></div>"
            + _table(
                ["", "members", "came back", "rate", "redeemed"],
                [
                    (
                        "with the offer",
                        c.lift.treatment,
                        c.lift.treatment_returned,
                        _pct(c.lift.treatment_rate),
                        f"{c.lift.treatment_redeemed} ({_pct(c.lift.redemption_rate)})",
                    ),
                    (
                        "holdout (not sent)",
                        c.lift.control,
                        c.lift.control_returned,
                        _pct(c.lift.control_rate),
                        "-",
                    ),
                ],
            )
            + f'<p class="note">delivery: {escape(_states(c))}'
            f" · decided {f.decided}, dismissed {f.dismissed}; {c.lift.pending} members decided too "
            "recently to tell</p></div>"
        )
    generated = _iso(report.generated_at)
    return "".join(
        [
            '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            "<title>Threshold report</title><style>",
            _CSS,
            "</style></head><body><header><h1>Threshold report</h1>",
            f"<p>{escape(_period(report))} · {len(report.stores)} stores · generated "
            f"{escape(generated)}</p></header><main>",
            f'<div class="cards">{cards}</div>',
            f'<h2>Visits per day</h2><div class="panel">{by_day}</div>',
            '<div class="grid2">',
            f'<div class="panel"><h3>By hour of the day</h3>{by_hour}</div>',
            f'<div class="panel"><h3>Time in store</h3>{stay}<p class="note">median '
            f"{_minutes(everywhere.median_s)} · 90 % of visits under {_minutes(everywhere.p90_s)}"
            f" · {everywhere.visits:,} ended visits</p></div>",
            "</div>",
            '<h2>Members</h2><div class="grid2">',
            f'<div class="panel"><h3>How often they came</h3>{frequency}<p class="note">mean '
            f"{_num(m.mean_visits)} visits per member · median {_num(m.median_visits)}</p></div>",
            '<div class="panel"><h3>Retention</h3>'
            + _table(
                ["", "members", "share"],
                [
                    ("in the period", m.unique, ""),
                    ("had visited before (returning)", m.returning, _pct(m.return_rate)),
                    (
                        "first time in the records (new)",
                        m.new,
                        _pct(1 - m.return_rate) if m.return_rate is not None else "-",
                    ),
                    (
                        f"came back within {m.cohort_days} days",
                        f"{m.cohort_came_back} of {m.cohort_eligible}",
                        _pct(m.cohort_rate),
                    ),
                ],
            )
            + "</div></div>",
            "<h2>Campaigns</h2>",
            "".join(campaigns) or '<p class="note">No campaign offers in this period.</p>',
            '<h2>Stores</h2><div class="panel">',
            _table(
                ["store", "time zone", "visits", "busiest hour", "median stay", "p90 stay"],
                store_rows,
            ),
            "</div>",
            '<p class="note">Definitions: docs/reports.md. Lift: return rate with the offer '
            "minus the holdout's, 95 % interval by Newcombe's hybrid score method.</p>",
            "</main></body></html>\n",
        ]
    )


RENDERERS: dict[str, Callable[[Report], str]] = {"text": to_text, "html": to_html}
