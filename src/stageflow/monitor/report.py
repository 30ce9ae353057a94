"""``monitor report ENV``: uptime, incidents, breaches, slowest endpoints, error kinds, trend — md, HTML, JSON.

Built from the samples and the alert history in the state store; the previous period of the same
length gives the trend. HTML has inline SVG charts (response time, CPU, memory) and no scripts.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from stageflow.monitor.checks.logs import percentile

if TYPE_CHECKING:
    from stageflow.monitor.engine import Monitor
    from stageflow.state.monitoring import HistoryEntry, MonitorState


@dataclass
class Period:
    """Figures of one period."""

    uptime: float | None
    checks: int
    p50_ms: float | None
    p95_ms: float | None
    incidents: int
    breaches: int


@dataclass
class Report:
    """Everything a report shows."""

    env: str
    since: float
    until: float
    current: Period
    previous: Period
    incidents: list[dict[str, Any]] = field(default_factory=list)
    breaches: dict[str, int] = field(default_factory=dict)
    slowest: list[dict[str, Any]] = field(default_factory=list)
    error_kinds: list[str] = field(default_factory=list)
    series: dict[str, list[tuple[float, float]]] = field(default_factory=dict)


def _period(state: MonitorState, env: str, since: float, until: float) -> Period:
    up = [v for _, t, v in state.samples(env, "up", since, until) if t == "public"]
    times = [v for _, _, v in state.samples(env, "response_ms", since, until)]
    p95 = [v for _, _, v in state.samples(env, "p95_ms", since, until)]
    history = state.history(since, until, env)
    return Period(
        uptime=sum(up) / len(up) * 100 if up else None, checks=len(up),
        p50_ms=percentile(times, 50) if times else None,
        p95_ms=(percentile(p95, 50) if p95 else percentile(times, 95)) if (times or p95) else None,
        incidents=sum(1 for h in history if h.transition == "firing"),
        breaches=sum(1 for h in history if h.transition == "pending"),
    )


def build_report(monitor: Monitor, env: str, seconds: float, now: float | None = None) -> Report:
    """The report of ``env`` over the last ``seconds``."""
    now = time.time() if now is None else now
    st = monitor.state
    since = now - seconds
    rep = Report(env, since, now, _period(st, env, since, now), _period(st, env, since - seconds, since))
    opened: dict[str, HistoryEntry] = {}
    for h in st.history(since - seconds * 10, now, env):
        fp = h.fingerprint
        if h.transition == "firing":
            opened[fp] = h
        elif h.transition == "resolved" and fp in opened:
            start = opened.pop(fp)
            if h.ts >= since:
                rep.incidents.append({"fingerprint": fp, "severity": start.severity, "summary": start.summary,
                                      "start": start.ts, "end": h.ts, "duration": h.duration})
        if h.transition == "pending" and h.ts >= since:
            rep.breaches[h.check_name] = rep.breaches.get(h.check_name, 0) + 1
    for fp, start in opened.items():
        rep.incidents.append({"fingerprint": fp, "severity": start.severity, "summary": start.summary,
                              "start": start.ts, "end": None, "duration": now - start.ts})
    paths: dict[str, list[float]] = {}
    for _, target, v in st.samples(env, "path_p95_ms", since, now):
        paths.setdefault(target, []).append(v)
    for target, _, v in ((t, 0, v) for _, t, v in st.samples(env, "response_ms", since, now)):
        paths.setdefault(f"(probe) {target}", []).append(v)
    ranked = sorted(paths.items(), key=lambda kv: -percentile(kv[1], 95))[:10]
    rep.slowest = [{"endpoint": p, "p95_ms": percentile(v, 95), "samples": len(v)} for p, v in ranked]
    files = [str(f) for w in monitor.watches if w.ctx.name == env and w.source for f in w.source.log_files().values()]
    for path in files:
        cursor = st.log_cursor(path)
        rep.error_kinds += cursor[2][-20:] if cursor else []
    for metric in ("response_ms", "service_cpu", "service_memory"):
        rep.series[metric] = [(ts, v) for ts, _, v in st.samples(env, metric, since, now)]
    host_cpu = [(ts, v) for ts, _, v in st.samples("host", "cpu", since, now)]
    host_mem = [(ts, v) for ts, _, v in st.samples("host", "memory", since, now)]
    rep.series["host_cpu"], rep.series["host_memory"] = host_cpu, host_mem
    return rep


def _iso(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(ts)) if ts else "ongoing"


def _trend(now: float | None, before: float | None, unit: str, lower_is_better: bool = False) -> str:
    if now is None:
        return "no data"
    text = f"{now:.1f}{unit}"
    if before is None:
        return text
    delta = now - before
    if abs(delta) < 1e-9:
        return f"{text} (unchanged)"
    better = delta < 0 if lower_is_better else delta > 0
    return f"{text} ({'+' if delta > 0 else ''}{delta:.1f}{unit} vs previous period, {'better' if better else 'worse'})"


def svg_chart(points: list[tuple[float, float]], title: str, unit: str, width: int = 640, height: int = 160) -> str:
    """A small inline SVG line chart (no script, no external resource)."""
    from markupsafe import escape

    if len(points) < 2:
        return f'<p class="nodata">{escape(title)}: not enough samples yet</p>'
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    x0, x1, top = min(xs), max(xs), max(max(ys), 1e-9)
    pad = 30
    coords = " ".join(
        f"{pad + (x - x0) / max(x1 - x0, 1e-9) * (width - 2 * pad):.1f},"
        f"{height - pad - y / top * (height - 2 * pad):.1f}" for x, y in points)
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
            f'aria-label="{escape(title)}"><text x="{pad}" y="16" font-size="12">{escape(title)} '
            f"(max {top:.1f}{escape(unit)})</text>"
            f'<polyline fill="none" stroke="#2f6fdf" stroke-width="1.5" points="{coords}"/>'
            f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" stroke="#999"/></svg>')


_MD = """# Monitoring report: {{ r.env }}

{{ iso(r.since) }} → {{ iso(r.until) }} UTC

| | this period | trend |
|---|---|---|
| uptime | {{ pct(r.current.uptime) }} | {{ trend(r.current.uptime, r.previous.uptime, "%") }} |
| median response | {{ ms(r.current.p50_ms) }} | {#-
#} {{ trend(r.current.p50_ms, r.previous.p50_ms, "ms", True) }} |
| p95 response | {{ ms(r.current.p95_ms) }} | {{ trend(r.current.p95_ms, r.previous.p95_ms, "ms", True) }} |
| incidents | {{ r.current.incidents }} | previous period: {{ r.previous.incidents }} |
| threshold breaches | {{ r.current.breaches }} | previous period: {{ r.previous.breaches }} |

## Incidents
{% for i in r.incidents %}
- **{{ i.severity }}** {{ i.fingerprint }}: {{ i.summary }} — {{ iso(i.start) }} → {{ iso(i.end) }} {#-
#} ({{ span(i.duration) }})
{%- else %}
none
{%- endfor %}

## Threshold breaches by check
{% for check, n in r.breaches.items() %}
- {{ check }}: {{ n }}
{%- else %}
none
{%- endfor %}

## Slowest endpoints
{% for s in r.slowest %}
- {{ s.endpoint }}: p95 {{ "%.0f"|format(s.p95_ms) }}ms ({{ s.samples }} samples)
{%- else %}
no samples
{%- endfor %}

## Error kinds seen in the logs
{% for k in r.error_kinds %}
- `{{ k }}`
{%- else %}
none
{%- endfor %}
"""

_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Monitoring report: {{ r.env }}</title>
<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}td,th{padding:.2em .8em;text-align:left}
.critical{color:#d40e0d}.warning{color:#b07800}</style></head><body>
<h1>Monitoring report: {{ r.env }}</h1>
<p>{{ iso(r.since) }} → {{ iso(r.until) }} UTC</p>
<table><tr><th></th><th>this period</th><th>trend</th></tr>
<tr><td>uptime</td><td>{{ pct(r.current.uptime) }}</td>
<td>{{ trend(r.current.uptime, r.previous.uptime, "%") }}</td></tr>
<tr><td>median response</td><td>{{ ms(r.current.p50_ms) }}</td>
<td>{{ trend(r.current.p50_ms, r.previous.p50_ms, "ms", True) }}</td></tr>
<tr><td>p95 response</td><td>{{ ms(r.current.p95_ms) }}</td>
<td>{{ trend(r.current.p95_ms, r.previous.p95_ms, "ms", True) }}</td></tr>
<tr><td>incidents</td><td>{{ r.current.incidents }}</td><td>previous: {{ r.previous.incidents }}</td></tr>
<tr><td>threshold breaches</td><td>{{ r.current.breaches }}</td><td>previous: {{ r.previous.breaches }}</td></tr>
</table>
<h2>Charts</h2>
{{ chart(r.series.response_ms, "response time", "ms") }}
{{ chart(r.series.host_cpu, "host CPU", "%") }}
{{ chart(r.series.host_memory, "host memory", "%") }}
{{ chart(r.series.service_cpu, "services CPU", "%") }}
<h2>Incidents</h2><ul>
{% for i in r.incidents %}<li class="{{ i.severity }}">{{ i.severity }} {{ i.fingerprint }}: {{ i.summary }} —
{{ iso(i.start) }} → {{ iso(i.end) }} ({{ span(i.duration) }})</li>{% else %}<li>none</li>{% endfor %}</ul>
<h2>Threshold breaches by check</h2><ul>
{% for check, n in r.breaches.items() %}<li>{{ check }}: {{ n }}</li>{% else %}<li>none</li>{% endfor %}</ul>
<h2>Slowest endpoints</h2><ul>
{% for s in r.slowest %}<li>{{ s.endpoint }}: p95 {{ "%.0f"|format(s.p95_ms) }}ms ({{ s.samples }} samples)</li>
{% else %}<li>no samples</li>{% endfor %}</ul>
<h2>Error kinds seen in the logs</h2><ul>
{% for k in r.error_kinds %}<li><code>{{ k }}</code></li>{% else %}<li>none</li>{% endfor %}</ul>
</body></html>
"""


def render(rep: Report, fmt: str) -> str:
    """Markdown, HTML or JSON."""
    if fmt == "json":
        return json.dumps(asdict(rep), indent=2) + "\n"
    import jinja2
    from markupsafe import Markup

    from stageflow.alerts.model import fmt_span

    # Markdown is text, not markup: only HTML is escaped.
    env = jinja2.Environment(autoescape=fmt == "html", undefined=jinja2.StrictUndefined,  # noqa: S701
                             keep_trailing_newline=True)
    helpers = {
        "iso": _iso, "span": fmt_span, "trend": _trend,
        "pct": lambda v: "no data" if v is None else f"{v:.2f}%",
        "ms": lambda v: "no data" if v is None else f"{v:.0f}ms",
        "chart": lambda pts, title, unit: Markup(svg_chart(pts, title, unit)),  # noqa: S704 - escaped inside
    }
    return env.from_string(_HTML if fmt == "html" else _MD).render(r=rep, **helpers)
