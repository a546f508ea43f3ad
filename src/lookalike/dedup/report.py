"""Self-contained HTML review pages (thumbnails embedded as base64 JPEG) for dups and sweeps.

One file that can be mailed or opened offline: no server, no sibling folder. Thumbnails are small
(160 px, JPEG q70) so a report of a few thousand images stays a few tens of MB.
"""

from __future__ import annotations

import base64
import html
import io
import os
import time
from collections.abc import Sequence
from pathlib import Path

from lookalike.dedup.groups import DupGroup
from lookalike.dedup.sweep import SweepResult
from lookalike.imaging.load import ImageLoadError, open_rgb
from lookalike.store.base import ItemRecord

THUMB = 160

_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;background:#fafafa;color:#222}
h1{font-size:1.4em} .meta{color:#666;font-size:.9em}
.group{background:#fff;border:1px solid #ddd;border-radius:6px;padding:.6em;margin:1em 0}
.grid{display:flex;flex-wrap:wrap;gap:.6em}
figure{margin:0;width:172px;font-size:.75em;word-break:break-all}
figure img{max-width:160px;max-height:160px;display:block;border:3px solid #ccc;border-radius:3px}
figure.keep img{border-color:#2a2} figure.dup img{border-color:#d60}
.score{font-weight:bold} .missing{width:160px;height:100px;background:#eee;display:flex;align-items:center;
justify-content:center;color:#999}
"""


def thumbnail_data_uri(path: str | os.PathLike[str], size: int = THUMB) -> str | None:
    """A base64 JPEG data URI of the image, or None if it cannot be read any more."""
    try:
        image = open_rgb(os.fspath(path), draft_size=size)
    except (ImageLoadError, OSError):
        return None
    image.thumbnail((size, size))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=70)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _figure(rec: ItemRecord, label: str, css: str) -> str:
    uri = thumbnail_data_uri(rec.path)
    img = f'<img src="{uri}" alt="">' if uri else '<div class="missing">unreadable</div>'
    return (
        f'<figure class="{css}">{img}<figcaption><span class="score">{html.escape(label)}</span><br>'
        f"{rec.width}×{rec.height}, {rec.size / 1024:.0f} KiB<br>{html.escape(rec.path)}</figcaption></figure>"
    )


def _page(title: str, summary: str, body: Sequence[str]) -> str:
    return (
        f'<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>"
        f'<p class="meta">{html.escape(summary)} · generated {time.strftime("%Y-%m-%d %H:%M")}</p>'
        + "".join(body)
        + "</body></html>"
    )


def dups_html(groups: Sequence[DupGroup], threshold: float, keep_rule: str) -> str:
    n_dups = sum(len(g.duplicates) for g in groups)
    body = []
    for number, group in enumerate(groups, 1):
        figures = [_figure(group.keep, "keep", "keep")]
        figures += [_figure(d, f"{s:.3f}", "dup") for d, s in zip(group.duplicates, group.scores, strict=True)]
        body.append(
            f'<section class="group"><div class="meta">group {number}: keep 1, {len(group.duplicates)} '
            f'duplicate(s)</div><div class="grid">{"".join(figures)}</div></section>'
        )
    summary = f"{len(groups)} groups, {n_dups} duplicates; threshold {threshold:.3f}, keep rule {keep_rule}"
    return _page("lookalike: duplicates", summary, body)


def sweep_html(result: SweepResult) -> str:
    figures = [
        _figure(m.record, f"{m.score:.3f}{' copy point for point' if m.verified else ''}", "dup")
        for m in result.matches
    ]
    verified = sum(m.verified for m in result.matches)
    summary = (
        f"{len(result.matches) - verified} matches ≥ {result.threshold:.3f}"
        + (f" and {verified} copies point for point under it" if verified else "")
        + f" for like: {', '.join(result.like)}"
        + (f"; unlike: {', '.join(result.unlike)}" if result.unlike else "")
    )
    grid = f'<section class="group"><div class="grid">{"".join(figures)}</div></section>'
    return _page("lookalike: sweep", summary, [grid])


def write_html(path: str | os.PathLike[str], document: str) -> None:
    """Write atomically (a half-written report is worse than none)."""
    target = Path(path)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(document, encoding="utf-8")
    os.replace(tmp, target)
