"""Markup by construction for the HTML report (:mod:`kasloop.reporting.report`): ``tag()``, ``Raw``, the small formatters, the CSS and the CSP.

Why a module of its own: this is the part of the report that keeps it safe, so it is short enough to read
whole. Escaping is by construction: markup is only built with ``tag()``, which escapes every string it is
given, and only ``tag()`` output (``Raw``) passes through unescaped. The page has no external resources
(CSS inline, no script at all) and a Content-Security-Policy (``_CSP``) that forbids loading anything, so a
page built from model and tool text cannot run code or phone home even if escaping ever failed.

The formatters (times, counts, dollars, durations, badges) turn one value into text or ``Raw``; they know
nothing of threads or events. Their ``_`` names are shared with :mod:`kasloop.reporting.report` only.
"""

from __future__ import annotations

import html
import json
import time
from collections.abc import Iterable
from typing import Any

__all__ = ["Raw", "tag"]


# -- markup that escapes by construction ------------------------------------------------------------


class Raw(str):
    """Markup built by ``tag`` (already escaped); any other ``str`` is text and gets escaped."""


def _children(items: Iterable[Any]) -> Iterable[str]:
    for item in items:
        if item is None or item is False:
            continue
        if isinstance(item, Raw):
            yield item
        elif isinstance(item, list | tuple):
            yield from _children(item)
        else:
            yield html.escape(str(item), quote=True)


def tag(name: str, /, *children: Any, **attrs: Any) -> Raw:
    """``<name attrs>children</name>``; ``cls`` is ``class``, ``_`` in names becomes ``-``, None drops an attribute."""
    parts = [name]
    for key, value in attrs.items():
        if value is None or value is False:
            continue
        key = "class" if key == "cls" else key.rstrip("_").replace("_", "-")
        parts.append(key if value is True else f'{key}="{html.escape(str(value), quote=True)}"')
    opening = "<" + " ".join(parts) + ">"
    if name in ("meta", "br", "hr", "col"):
        return Raw(opening)
    return Raw(opening + "".join(_children(children)) + f"</{name}>")


def _join(items: Iterable[Any]) -> Raw:
    return Raw("".join(_children(items)))


# -- formatting ---------------------------------------------------------------------------------------


def _clock(ts: float | None) -> str:
    if not ts:
        return ""
    return time.strftime("%H:%M:%S", time.localtime(ts)) + f".{int(ts * 1000) % 1000:03d}"


def _when(ts: float | None) -> str:
    """Date and time without the zone (the header states it), for tables read across days."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "—"


def _date(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S %z", time.localtime(ts)) if ts else "—"


def _int(value: Any) -> str:
    return f"{int(value or 0):,}"


def _usd(value: Any) -> str:
    amount = float(value or 0.0)
    return "$0" if amount == 0 else f"${amount:,.6f}".rstrip("0").rstrip(".")


def _seconds(value: Any) -> str:
    s = float(value or 0.0)
    return f"{s:.1f} s" if s < 120 else f"{s / 60:.1f} min" if s < 7200 else f"{s / 3600:.1f} h"


def _compact(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)


def _badge(text: str, kind: str) -> Raw:
    return tag("span", text, cls=f"badge b-{kind}")


def _pre(text: Any, cls: str = "out") -> Raw:
    return tag("pre", _compact(text), cls=cls)


# -- style and content policy ------------------------------------------------------------------------


_CSS = """
:root{--ok:#1a7f37;--warn:#9a6700;--bad:#cf222e;--info:#0969da;--diag:#8250df;--mute:#57606a;--line:#d0d7de;--bg:#f6f8fa}
*{box-sizing:border-box}body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;color:#1f2328;margin:0 auto;max-width:1100px;padding:24px}
h1{font-size:22px;margin:0 0 12px}h2{font-size:18px;border-bottom:1px solid var(--line);padding-bottom:4px;margin-top:32px}
h3{font-size:16px;margin:20px 0 8px}h4{font-size:14px;margin:0 0 6px}code{font:12px ui-monospace,monospace;background:var(--bg);padding:1px 4px;border-radius:4px}
pre{font:12px/1.4 ui-monospace,monospace;white-space:pre-wrap;word-break:break-word;margin:4px 0;padding:6px 8px;border-radius:6px;background:var(--bg)}
pre.say{background:#fff8c5}.dim{color:var(--mute)}a{color:var(--info)}
dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:4px 16px;margin:0 0 16px}dt{font-weight:600}dd{margin:0}
.tiles{display:flex;flex-wrap:wrap;gap:8px;margin-bottom:12px}.tile{border:1px solid var(--line);border-radius:8px;padding:6px 12px;min-width:110px}
.tile .n{font-size:18px;font-weight:600}.tile .l{color:var(--mute);font-size:12px}nav a{margin-right:14px}
.badge{display:inline-block;font-size:12px;font-weight:600;padding:0 8px;border-radius:10px;color:#fff}
.b-ok{background:var(--ok)}.b-warn{background:var(--warn)}.b-bad{background:var(--bad)}.b-info{background:var(--info)}
table{border-collapse:collapse;width:100%;margin:8px 0}th,td{border:1px solid var(--line);padding:4px 8px;text-align:left;vertical-align:top}
thead th,tfoot th{background:var(--bg)}
.cycle{border:1px solid var(--line);border-radius:8px;padding:10px 12px;margin:10px 0}
ol.events{list-style:none;margin:0;padding:0}.ev{display:grid;grid-template-columns:95px 130px 1fr;gap:8px;padding:4px 0 4px 8px;border-left:3px solid var(--line)}
.ev+.ev{border-top:1px dashed var(--line)}.ev .ts{color:var(--mute);font:12px ui-monospace,monospace}.ev .kind{font-weight:600}
.ev.bad,ol.errors li.bad{border-left-color:var(--bad)}.ev.warn{border-left-color:var(--warn)}.ev.diag,ol.errors li.diag{border-left-color:var(--diag)}
ul.calls,ul.kv{margin:4px 0;padding-left:18px}ol.errors li{border-left:3px solid var(--line);padding-left:8px;margin:8px 0}
footer{margin-top:32px;color:var(--mute);font-size:12px}
@media print{.cycle{break-inside:avoid}}
"""
_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'"
