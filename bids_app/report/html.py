"""The page skeleton shared by the reports."""

from __future__ import annotations

import html

import pandas as pd


def table(frame: pd.DataFrame) -> str:
    return frame.to_html(index=False, float_format=lambda v: f"{v:.3g}", border=0,
                         classes="table")


def page(title: str, parts: list[str]) -> str:
    return ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>" + html.escape(title)
            + "</title><style>body{font-family:sans-serif;max-width:1100px;margin:auto}"
            ".table td,.table th{padding:2px 8px}img{max-width:100%}</style></head><body>"
            + "\n".join(parts) + "</body></html>")


def methods(text: str) -> list[str]:
    return ["<h2>Methods</h2>", f"<p>{html.escape(text)}</p>"]
