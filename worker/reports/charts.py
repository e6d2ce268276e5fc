"""The reports' charts as PNG bytes: matplotlib's Agg canvas on a Figure of our own (no pyplot, so no
global state and no display), a fixed size (WIDTH x HEIGHT px at DPI) and no timestamp in the file,
so the same figures make the same image."""

from __future__ import annotations

import io
import math
from datetime import date
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

WIDTH, HEIGHT, DPI = 800, 300, 100
COLORS = ("#2563eb", "#16a34a", "#f59e0b", "#dc2626")
_STYLE = {"title": 12, "label": 10, "tick": 9}


def _text(value: Any) -> str:
    """A label as plain text: `$` would start mathtext."""
    return str(value).replace("$", r"\$")


def _axes(title: str, ylabel: str, xlabel: str | None = None) -> tuple[Figure, Any]:
    fig = Figure(figsize=(WIDTH / DPI, HEIGHT / DPI), dpi=DPI, facecolor="white")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.set_title(_text(title), fontsize=_STYLE["title"], fontweight="bold")
    ax.set_ylabel(_text(ylabel), fontsize=_STYLE["label"])
    if xlabel:
        ax.set_xlabel(_text(xlabel), fontsize=_STYLE["label"])
    ax.tick_params(labelsize=_STYLE["tick"])
    ax.grid(axis="y", color="#e5e7eb", linewidth=0.8)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    return fig, ax


def _png(fig: Figure) -> bytes:
    fig.tight_layout(pad=0.6)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


def _day_label(d: date | str) -> str:
    d = date.fromisoformat(d) if isinstance(d, str) else d
    return d.strftime("%a %d %b")


def _nan(v: float | None) -> float:
    return math.nan if v is None else float(v)


def volume(days: list[dict[str, Any]]) -> bytes:
    """Registrations, confirmations and emails sent per day, as grouped bars."""
    fig, ax = _axes("Registrations, confirmations and emails sent per day", "count", "day (UTC)")
    series = (("registrations", "registrations"), ("confirmations", "confirmations"), ("emails_sent", "emails sent"))
    width = 0.26
    for i, (key, label) in enumerate(series):
        xs = [x + (i - 1) * width for x in range(len(days))]
        ax.bar(xs, [d[key] for d in days], width, label=label, color=COLORS[i])
    ax.set_xticks(range(len(days)), [_day_label(d["day"]) for d in days])
    ax.legend(fontsize=_STYLE["tick"], frameon=False, ncols=3, loc="upper left", bbox_to_anchor=(0, -0.2))
    ax.margins(y=0.12)
    return _png(fig)


def processing(days: list[dict[str, Any]]) -> bytes:
    """Processing time (confirmation_generated_at - updated_at) p50, p95 and p99 per day."""
    fig, ax = _axes("Processing time per day (payment to confirmation)", "seconds", "day (UTC)")
    xs = range(len(days))
    for i, (key, label) in enumerate((("p50_seconds", "p50"), ("p95_seconds", "p95"), ("p99_seconds", "p99"))):
        ax.plot(xs, [_nan(d[key]) for d in days], marker="o", linewidth=2, markersize=4, label=label, color=COLORS[i])
    ax.set_xticks(xs, [_day_label(d["day"]) for d in days])
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=_STYLE["tick"], frameon=False, ncols=3, loc="upper left", bbox_to_anchor=(0, -0.2))
    return _png(fig)


def webhook_errors(hooks: list[dict[str, Any]]) -> bytes:
    """Error rate (non-200 answers, % of calls) per webhook over the week, as horizontal bars."""
    fig, ax = _axes("Webhook error rate over the week", "webhook", "% of calls not answered 200")
    ax.grid(axis="y", visible=False)
    ax.grid(axis="x", color="#e5e7eb", linewidth=0.8)
    if not hooks:
        ax.text(0.5, 0.5, "no webhook calls this week", ha="center", va="center", transform=ax.transAxes,
                fontsize=_STYLE["label"], color="#6b7280")
        ax.set_yticks([])
        return _png(fig)
    rates = [h["error_rate_percent"] or 0.0 for h in hooks][::-1]
    names = [_text(h["webhook_name"]) for h in hooks][::-1]
    bars = ax.barh(range(len(hooks)), rates, color=[COLORS[3] if r >= 5 else COLORS[0] for r in rates], height=0.6)
    ax.set_yticks(range(len(hooks)), names)
    top = max(rates) or 1.0
    ax.set_xlim(0, top * 1.45)
    for bar, rate, h in zip(bars, rates, hooks[::-1], strict=True):
        ax.text(bar.get_width() + top * 0.01, bar.get_y() + bar.get_height() / 2,
                f"{rate:.2f}%  ({h['errors']:,} of {h['total_calls']:,})", va="center", fontsize=_STYLE["tick"])
    return _png(fig)


def growth(months: list[dict[str, Any]]) -> bytes:
    """Registrations per month, each bar labelled with its growth over the month before."""
    fig, ax = _axes("Registrations per month, growth month over month", "registrations", "month (UTC)")
    if not months:
        ax.text(0.5, 0.5, "no registrations in the last 12 months", ha="center", va="center",
                transform=ax.transAxes, fontsize=_STYLE["label"], color="#6b7280")
        return _png(fig)
    bars = ax.bar(range(len(months)), [m["registrations"] for m in months], 0.6, color=COLORS[0],
                  label="registrations")
    ax.set_xticks(range(len(months)), [m["month"] for m in months])
    for bar, m in zip(bars, months, strict=True):
        g = m["growth_rate_percent"]
        label = "n/a" if g is None else f"{g:+.1f}%"
        ax.annotate(label, (bar.get_x() + bar.get_width() / 2, bar.get_height()), xytext=(0, 3),
                    textcoords="offset points", ha="center", fontsize=_STYLE["tick"],
                    color="#6b7280" if g is None else COLORS[1] if g >= 0 else COLORS[3])
    ax.margins(y=0.15)
    ax.legend(fontsize=_STYLE["tick"], frameon=False, loc="upper left")
    return _png(fig)


def weekly(data: dict[str, Any]) -> dict[str, bytes]:
    """Content id -> PNG for the weekly report."""
    return {"volume": volume(data["days"]), "processing": processing(data["days"]),
            "webhooks": webhook_errors(data["webhooks"])}


def monthly(data: dict[str, Any]) -> dict[str, bytes]:
    return {"growth": growth(data["months"])}
