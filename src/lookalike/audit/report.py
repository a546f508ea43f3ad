"""Acting on an audit: the findings as CSV rows, as a self-contained HTML page, and as files to quarantine."""

from __future__ import annotations

import csv
import html
import os
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from lookalike.audit.core import AuditReport
from lookalike.audit.quality import ISSUES
from lookalike.dedup.report import thumbnail_data_uri, write_html
from lookalike.store.base import ItemRecord

#: What ``only`` may name: groups of findings, or single quality issues.
FINDING_GROUPS = ("outliers", "quality", "duplicates", *ISSUES)
CSV_COLUMNS = ("path", "finding", "score", "detail", "cluster")


def _wanted(only: Iterable[str] | None) -> set[str]:
    chosen = set(only or ("outliers", "quality", "duplicates"))
    unknown = sorted(chosen - set(FINDING_GROUPS))
    if unknown:
        raise ValueError(f"unknown finding {', '.join(unknown)}; choose from {', '.join(FINDING_GROUPS)}")
    if "quality" in chosen:
        chosen |= set(ISSUES)
    return chosen


def findings(report: AuditReport, only: Iterable[str] | None = None) -> list[tuple[ItemRecord, str, float, str]]:
    """``(record, finding, score, detail)`` for every reported finding (``only``: some of
    :data:`FINDING_GROUPS`); a file can have several. Duplicates are the copies *not* kept."""
    wanted = _wanted(only)
    rows: list[tuple[ItemRecord, str, float, str]] = []
    if "outliers" in wanted:
        rows += [(a.record, "outlier", float(a.outlier_score or 0.0), "") for a in report.outliers()]
    for a in report.quality():
        rows += [(a.record, issue, a.quality.severity(issue), "") for issue in a.issues if issue in wanted]
    if "duplicates" in wanted:
        for kind, groups in (("exact_duplicate", report.exact_duplicates), ("near_duplicate", report.near_duplicates)):
            for group in groups:
                for dup, score in zip(group.duplicates, group.scores, strict=True):
                    if kind == "near_duplicate" and dup.sha256 == group.keep.sha256:
                        continue  # listed with the exact copies
                    rows.append((dup, kind, float(score), f"keep {group.keep.path}"))
    return rows


def write_csv(report: AuditReport, path: str | os.PathLike[str], only: Iterable[str] | None = None) -> int:
    """Write the findings (one row per file and finding) atomically; returns the number of rows."""
    cluster_of = {a.record.id: a.cluster for a in report.items}
    rows = findings(report, only)
    target = Path(path)
    tmp = target.with_name(f".{target.name}.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_COLUMNS)
        for rec, finding, score, detail in rows:
            writer.writerow([rec.path, finding, f"{score:.4f}", detail, cluster_of.get(rec.id, "")])
    os.replace(tmp, target)
    return len(rows)


def quarantine_plan(report: AuditReport, only: Iterable[str] | None = None) -> tuple[list[ItemRecord], list[str]]:
    """The files to move for these findings, each once, with the reason the manifest records."""
    reasons: dict[int, list[str]] = {}
    records: dict[int, ItemRecord] = {}
    for rec, finding, score, detail in findings(report, only):
        records[rec.id] = rec
        text = f"{finding} ({score:.3f}{', ' + detail if detail else ''})"
        reasons.setdefault(rec.id, []).append(text)
    order = sorted(records, key=lambda i: records[i].path)
    return [records[i] for i in order], ["audit: " + "; ".join(reasons[i]) for i in order]


# -- HTML ----------------------------------------------------------------------------------------------
_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;background:#fafafa;color:#222}
h1{font-size:1.4em} h2{font-size:1.15em;margin-top:1.6em} .meta{color:#666;font-size:.9em}
.group{background:#fff;border:1px solid #ddd;border-radius:6px;padding:.6em;margin:.8em 0}
.grid{display:flex;flex-wrap:wrap;gap:.6em}
figure{margin:0;width:172px;font-size:.75em;word-break:break-all}
figure img{max-width:160px;max-height:160px;display:block;border:3px solid #ccc;border-radius:3px}
figure.flag img{border-color:#d60} figure.keep img{border-color:#2a2}
.missing{width:160px;height:100px;background:#eee;display:flex;align-items:center;justify-content:center;color:#999}
table{border-collapse:collapse} td,th{padding:.15em .6em;text-align:left}
"""


def _figure(rec: ItemRecord, label: str, css: str = "flag") -> str:
    uri = thumbnail_data_uri(rec.path)
    img = f'<img src="{uri}" alt="">' if uri else '<div class="missing">unreadable</div>'
    return (
        f'<figure class="{css}">{img}<figcaption><b>{html.escape(label)}</b><br>{rec.width}×{rec.height}<br>'
        f"{html.escape(rec.path)}</figcaption></figure>"
    )


def _section(title: str, figures: Sequence[str], note: str = "") -> str:
    if not figures:
        return f"<h2>{html.escape(title)}</h2><p class='meta'>none</p>"
    meta = f"<p class='meta'>{html.escape(note)}</p>" if note else ""
    return f"<h2>{html.escape(title)} ({len(figures)})</h2>{meta}<div class='group grid'>{''.join(figures)}</div>"


def audit_html(report: AuditReport, limit: int = 200) -> str:
    """One offline page: counts, odd ones out, each quality issue, duplicates and clusters (thumbnails
    embedded; at most ``limit`` per section, the worst first)."""
    counts = report.counts()
    body = [
        "<table>"
        + "".join(f"<tr><th>{html.escape(k.replace('_', ' '))}</th><td>{v}</td></tr>" for k, v in counts.items())
        + "</table>"
    ]
    outliers = report.outliers()
    body.append(
        _section(
            "Odd ones out",
            [_figure(a.record, f"score {a.outlier_score:.1f}") for a in outliers[:limit]],
            f"unlike the rest of the collection (robust z-score ≥ {report.settings['outlier_cutoff']})",
        )
    )
    for issue, found in report.by_issue().items():
        figures = [_figure(a.record, f"{issue} {a.quality.severity(issue):.2f}") for a in found[:limit]]
        body.append(_section(issue.replace("_", " ").capitalize(), figures))
    for title, groups in (("Exact duplicates", report.exact_duplicates), ("Near-duplicates", report.near_duplicates)):
        blocks = []
        for group in groups[:limit]:
            figures = [_figure(group.keep, "keep", "keep")]
            figures += [_figure(d, f"{s:.3f}") for d, s in zip(group.duplicates, group.scores, strict=True)]
            blocks.append(f"<div class='group grid'>{''.join(figures)}</div>")
        body.append(f"<h2>{title} ({len(groups)})</h2>" + ("".join(blocks) or "<p class='meta'>none</p>"))
    body.append(f"<h2>Clusters ({len(report.clusters)})</h2>")
    for c in report.clusters:
        figures = "".join(_figure(r, f"cluster {c.id}", "keep") for r in c.examples)
        head = f"<div class='meta'>cluster {c.id}: {c.size} files</div>"
        body.append(f"<div class='group'>{head}<div class='grid'>{figures}</div></div>")
    title = "lookalike: audit"
    return (
        f'<!doctype html><html><head><meta charset="utf-8"><title>{title}</title><style>{_STYLE}</style></head>'
        f"<body><h1>{title}</h1><p class='meta'>{counts['items']} files · generated "
        f"{time.strftime('%Y-%m-%d %H:%M')}</p>" + "".join(body) + "</body></html>"
    )


def write_audit_html(report: AuditReport, path: str | os.PathLike[str], limit: int = 200) -> None:
    write_html(path, audit_html(report, limit))
