"""The page skeleton shared by the reports: style, navigation, sections, tables, notes.

Everything a report shows lives inside the page (figures are embedded PNGs, the style is
inline, there is no script): a report opens offline and from any folder.
"""

from __future__ import annotations

import html
import re

import pandas as pd

STYLE = """
body{font-family:-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;font-size:15px;
 line-height:1.45;color:#222;max-width:1100px;margin:0 auto;padding:0 16px 40px}
nav{position:sticky;top:0;background:#2c3e50;margin:0 -16px;padding:6px 16px;z-index:1}
nav a{color:#fff;margin-right:14px;text-decoration:none;font-size:14px}
h1{font-size:24px;margin:18px 0 6px}h2{font-size:20px;border-bottom:1px solid #ccc;
 padding-bottom:3px;margin-top:28px}h3{font-size:16px;margin:14px 0 4px}
img{max-width:100%;height:auto;display:block;margin:6px 0}
.table-wrap{max-width:100%;overflow-x:auto;margin:6px 0}
.scroll-y{max-height:320px;overflow-y:auto}
.table{border-collapse:collapse;font-size:13px}
.table th{background:#eef1f4;text-align:left;position:sticky;top:0}
.table td,.table th{padding:3px 9px;border-bottom:1px solid #ddd;vertical-align:top}
.table td.num{text-align:right;font-variant-numeric:tabular-nums}
.missing{color:#777;font-style:italic}
.note{color:#444;font-size:14px}
.warn{background:#fff4e5;border-left:4px solid #e67e22;padding:6px 10px;margin:6px 0}
.ok{background:#eaf7ea;border-left:4px solid #27ae60;padding:6px 10px;margin:6px 0}
details{border:1px solid #ddd;border-radius:4px;margin:6px 0;padding:0 10px}
details[open]{padding-bottom:8px}
summary{cursor:pointer;padding:6px 0;font-weight:600}
summary .detail{font-weight:normal;color:#555}
dl.summary{display:grid;grid-template-columns:max-content auto;gap:2px 14px;margin:6px 0}
dl.summary dt{font-weight:600}dl.summary dd{margin:0}
"""

#: How a value that is not there is written in a table cell.
MISSING = "—"


def _anchor(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


def section(title: str, *parts: str) -> str:
    """A ``<section>`` with an ``<h2>`` that the navigation bar links to."""
    return (f"<section id='{_anchor(title)}'><h2>{html.escape(title)}</h2>"
            + "\n".join(parts) + "</section>")


def details(summary: str, *parts: str, open_: bool = False, detail: str = "") -> str:
    """A collapsible block: ``summary`` (plain text, ``detail`` in lighter type) shown,
    ``parts`` (HTML) revealed on click."""
    extra = f" <span class='detail'>{html.escape(detail)}</span>" if detail else ""
    return (f"<details{' open' if open_ else ''}><summary>{html.escape(summary)}{extra}"
            "</summary>" + "\n".join(parts) + "</details>")


def note(text: str, kind: str = "note") -> str:
    """A paragraph of plain ``text``; ``kind`` is ``note``, ``warn`` or ``ok``."""
    return f"<p class='{kind}'>{html.escape(text)}</p>"


def summary_list(items: dict) -> str:
    """A two-column list of ``{label: value}`` (plain text)."""
    return ("<dl class='summary'>" + "".join(
        f"<dt>{html.escape(str(k))}</dt><dd>{html.escape(str(v))}</dd>"
        for k, v in items.items()) + "</dl>")


def _cell(value) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return f"<td class='missing'>{MISSING}</td>"
    if isinstance(value, bool):
        return f"<td>{'yes' if value else 'no'}</td>"
    if isinstance(value, int) or (hasattr(value, "dtype") and value.dtype.kind in "iu"):
        return f"<td class='num'>{int(value):,}</td>"
    if isinstance(value, float) or (hasattr(value, "dtype") and value.dtype.kind == "f"):
        return f"<td class='num'>{float(value):.3g}</td>"
    return f"<td>{html.escape(str(value))}</td>"


def table(frame: pd.DataFrame, scroll: bool = False) -> str:
    """``frame`` as an HTML table that never widens the page: numbers right-aligned with 3
    significant digits, missing values (None, NaN) as an em dash; ``scroll`` caps its
    height (every row is still there)."""
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    rows = "".join("<tr>" + "".join(_cell(v) for v in row) + "</tr>"
                   for row in frame.itertuples(index=False))
    wrap = "table-wrap scroll-y" if scroll else "table-wrap"
    return (f"<div class='{wrap}'><table class='table'><thead><tr>{head}</tr></thead>"
            f"<tbody>{rows}</tbody></table></div>")


def page(title: str, parts: list[str]) -> str:
    """The whole HTML document; the navigation bar links every ``section``."""
    titles = re.findall(r"<section id='([^']+)'><h2>([^<]+)</h2>", "\n".join(parts))
    nav = "".join(f"<a href='#{anchor}'>{text}</a>" for anchor, text in titles)
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>"
            f"<nav>{nav}</nav>" + "\n".join(parts) + "</body></html>")


def methods(text: str) -> list[str]:
    return [section("Methods", f"<p>{html.escape(text)}</p>")]
