"""A report's figures and charts as an email (HTML part with `cid:` images, a text part, and the PNGs
as Resend attachments whose content ids the HTML references) or as one HTML file with the images
inline as data: URIs. Every value reaches the HTML through Jinja's autoescape."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any, Literal

import jinja2

from worker.reports import charts

ALT = {"volume": "Registrations, confirmations and emails sent per day",
       "processing": "Processing time p50, p95 and p99 per day",
       "webhooks": "Error rate per webhook over the week",
       "growth": "Registrations per month and growth month over month"}

_env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=jinja2.select_autoescape(enabled_extensions=("html.j2",), default_for_string=True),
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
)


def _num(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:,.{digits}f}"


def _pct(value: Any) -> str:
    return "-" if value is None else f"{value:.2f}%"


def _signed(value: Any) -> str:
    return "n/a" if value is None else f"{value:+.2f}%"


_env.filters.update(num=_num, pct=_pct, signed=_signed)


def subject(data: dict[str, Any]) -> str:
    """The email's subject and the page's title; a target's report names it (`of target a,`)."""
    of = f" of target {data['target']}," if data.get("target") else ""
    if data["kind"] == "weekly":
        t = data["totals"]
        return (f"[opsfleet] weekly performance{of} {data['first']} to {data['last']}: {t['registrations']:,} "
                f"registrations, {_pct(t['success_rate'])} confirmed, {t['error_count']:,} webhook errors")
    latest = data["latest"]
    if latest is None:
        return f"[opsfleet] monthly growth{of} to {data['month']}: no registrations in {data['month']}"
    return (f"[opsfleet] monthly growth{of} {data['month']}: {latest['registrations']:,} registrations "
            f"({_signed(latest['growth_rate_percent'])} on the month before)")


def render(data: dict[str, Any], images: Literal["cid", "inline"]) -> dict[str, Any]:
    """{subject, html, text} and, for images="cid", `attachments` (Resend's shape: filename, base64
    content, content_type, content_id). images="inline" puts the PNGs in the HTML as data: URIs."""
    pngs = charts.weekly(data) if data["kind"] == "weekly" else charts.monthly(data)
    encoded = {cid: base64.b64encode(png).decode("ascii") for cid, png in pngs.items()}
    src = {cid: f"cid:{cid}" if images == "cid" else f"data:image/png;base64,{b64}" for cid, b64 in encoded.items()}
    context = {**data, "target": data.get("target"), "subject": subject(data), "img": src, "alt": ALT,
               "size": {"width": charts.WIDTH, "height": charts.HEIGHT}}
    out: dict[str, Any] = {
        "subject": context["subject"],
        "html": _env.get_template(f"{data['kind']}.html.j2").render(context),
        "text": _env.get_template(f"{data['kind']}.txt.j2").render(context),
    }
    if images == "cid":
        out["attachments"] = [{"filename": f"{cid}.png", "content": b64, "content_type": "image/png",
                               "content_id": cid} for cid, b64 in encoded.items()]
    return out


def write_file(data: dict[str, Any], path: Path) -> Path:
    """The report as one self-contained HTML file (images as data: URIs)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(data, images="inline")["html"], encoding="utf-8")
    return path
