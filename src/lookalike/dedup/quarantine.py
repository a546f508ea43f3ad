"""Quarantine: move files out of the collection with a manifest that ``restore`` can always undo.

Safety rules, each covered by a test:

* Nothing is deleted. A move is ``os.link`` to the new name then ``os.unlink`` of the old one (the
  data always has at least one name, and ``link`` never overwrites), or, across file systems, a copy
  that is fsynced and verified by sha256 before the original name is removed.
* The manifest entry (``state: "planned"``) is written and fsynced *before* each move and a
  ``"moved"`` entry after it, so ``kill -9`` at any moment leaves a manifest from which
  :func:`restore` finds the file under one of its two names.
* A file is moved only if its sha256 still equals the indexed one (changed or deleted since the
  review: skipped and reported), and only if it lies inside an indexed root.
* Names in the quarantine folder never collide: ``a.jpg`` becomes ``a (1).jpg``, ``a (2).jpg`` ...
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from lookalike.durable import fsync_dir
from lookalike.index import Index
from lookalike.store.base import ItemRecord, Store, StoreError

MANIFEST_VERSION = 1


class QuarantineError(StoreError):
    """A quarantine or restore that cannot start (bad folder, unreadable manifest)."""


@dataclass
class Outcome:
    path: str
    status: str  # moved | restored | skipped
    reason: str = ""
    new_path: str = ""

    def to_dict(self) -> dict[str, str]:
        out = {"path": self.path, "status": self.status}
        if self.new_path:
            out["new_path"] = self.new_path
        if self.reason:
            out["reason"] = self.reason
        return out


@dataclass
class QuarantineReport:
    manifest: str
    moved: list[Outcome] = field(default_factory=list)
    skipped: list[Outcome] = field(default_factory=list)
    removed_from_index: int = 0

    def to_dict(self) -> dict[str, object]:
        return {
            "manifest": self.manifest,
            "moved": [o.to_dict() for o in self.moved],
            "skipped": [o.to_dict() for o in self.skipped],
            "removed_from_index": self.removed_from_index,
        }


@dataclass
class RestoreReport:
    manifest: str
    restored: list[Outcome] = field(default_factory=list)
    skipped: list[Outcome] = field(default_factory=list)
    reindexed: int = 0

    def to_dict(self) -> dict[str, object]:
        return {
            "manifest": self.manifest,
            "restored": [o.to_dict() for o in self.restored],
            "skipped": [o.to_dict() for o in self.skipped],
            "reindexed": self.reindexed,
        }


def sha256_file(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _inside(path: str, folder: str) -> bool:
    try:
        return os.path.commonpath([path, folder]) == folder
    except ValueError:  # different drives
        return False


def containing_root(path: str, roots: Sequence[str]) -> str | None:
    """The deepest indexed root that holds ``path`` (symlinks in the folders resolved), or None."""
    real = os.path.join(os.path.realpath(os.path.dirname(os.path.abspath(path))), os.path.basename(path))
    best = None
    for root in roots:
        real_root = os.path.realpath(root)
        if _inside(real, real_root) and real != real_root and (best is None or len(real_root) > len(best[1])):
            best = (root, real_root)
    return best[1] if best else None


def _free_name(target: Path) -> Path:
    """``target`` or ``stem (n).ext``: the first name not taken (checked again atomically by ``link``)."""
    if not os.path.lexists(target):
        return target
    n = 1
    while True:
        candidate = target.with_name(f"{target.stem} ({n}){target.suffix}")
        if not os.path.lexists(candidate):
            return candidate
        n += 1


def _move_no_overwrite(src: str, dst: Path, sha256: str, *, exact: bool = False) -> Path:
    """Move ``src`` to ``dst`` (or a free variant of it) without ever overwriting or losing data.

    ``exact``: use exactly ``dst`` and raise ``FileExistsError`` if it is taken.
    """
    dst.parent.mkdir(parents=True, exist_ok=True)
    while True:
        if not exact:
            dst = _free_name(dst)
        try:
            os.link(src, dst, follow_symlinks=False)
        except FileExistsError:
            if exact:
                raise
            continue  # someone took the name in between: pick the next one
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.EPERM, errno.ENOTSUP, errno.EMLINK):
                raise
            _copy_verified(src, dst, sha256)
        os.unlink(src)
        fsync_dir(dst.parent)
        fsync_dir(os.path.dirname(src))
        return dst


def _copy_verified(src: str, dst: Path, sha256: str) -> None:
    """Cross-device fallback: exclusive-create copy, fsync, verify, keep the source until then."""
    tmp = dst.with_name(f".{dst.name}.lookalike-partial")
    with open(src, "rb") as fin, open(tmp, "xb") as fout:
        shutil.copyfileobj(fin, fout, 1 << 20)
        fout.flush()
        os.fsync(fout.fileno())
    shutil.copystat(src, tmp)
    if sha256_file(tmp) != sha256:
        raise OSError(f"copy of {src} does not verify; original left in place, partial copy at {tmp}")
    os.link(tmp, dst)  # exclusive: raises FileExistsError rather than overwrite
    os.unlink(tmp)


class _Manifest:
    """Append-only JSON lines, each fsynced: the record that makes every move undoable."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.handle = open(path, "x", encoding="utf-8")  # noqa: SIM115 - lives as long as the run; never clobbers
        fsync_dir(path.parent)

    def write(self, entry: dict[str, object]) -> None:
        self.handle.write(json.dumps(entry, ensure_ascii=False) + "\n")
        self.handle.flush()
        os.fsync(self.handle.fileno())

    def close(self) -> None:
        self.handle.close()


def quarantine(
    store: Store,
    records: Sequence[ItemRecord],
    dest: str | os.PathLike[str],
    *,
    reason: str | Sequence[str],
    manifest: str | os.PathLike[str] | None = None,
) -> QuarantineReport:
    """Move these indexed files into ``dest`` (keeping their path relative to their indexed root).

    Writes a JSON-lines manifest (default ``dest/manifest-<time>.jsonl``), skips files that changed
    or vanished since they were indexed (by sha256) or lie outside the indexed roots, and removes the
    moved items from the index. ``reason`` is one text for all, or one per record.
    """
    reasons = [reason] * len(records) if isinstance(reason, str) else list(reason)
    if len(reasons) != len(records):
        raise ValueError("one reason per record")
    dest_dir = Path(dest).absolute()
    roots = [str(r) for r in (store.get_meta("roots") or [])]  # type: ignore[union-attr]
    for root in roots:
        if _inside(os.path.realpath(dest_dir), os.path.realpath(root)):
            raise QuarantineError(
                f"quarantine folder {dest_dir} is inside the indexed folder {root}: the next `lookalike index` "
                "would index the quarantined files again. Choose a folder outside it."
            )
    dest_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    manifest_path = Path(manifest) if manifest else _free_name(dest_dir / f"manifest-{stamp}.jsonl")
    log = _Manifest(manifest_path)
    report = QuarantineReport(str(manifest_path))
    db = getattr(store, "folder", None)
    log.write(
        {
            "state": "header",
            "version": MANIFEST_VERSION,
            "db": str(Path(db).absolute()) if db else None,
            "quarantine": str(dest_dir),
            "reason": reason if isinstance(reason, str) else "per file",
            "time": time.time(),
        }
    )
    moved_ids: list[int] = []
    try:
        for rec, why in zip(records, reasons, strict=True):
            outcome = _quarantine_one(rec, roots, dest_dir, why, log)
            if outcome.status == "moved":
                report.moved.append(outcome)
                moved_ids.append(rec.id)
            else:
                report.skipped.append(outcome)
    finally:
        log.close()
        report.removed_from_index = store.remove(moved_ids) if moved_ids else 0
    return report


def _quarantine_one(rec: ItemRecord, roots: Sequence[str], dest_dir: Path, reason: str, log: _Manifest) -> Outcome:
    path = rec.path
    root = containing_root(path, roots)
    if root is None:
        return Outcome(path, "skipped", "outside the indexed folders: lookalike never moves it")
    if not os.path.lexists(path):
        return Outcome(path, "skipped", "missing: deleted or moved since it was indexed")
    if os.path.islink(path) or not os.path.isfile(path):
        return Outcome(path, "skipped", "not a regular file")
    try:
        actual = sha256_file(path)
    except OSError as exc:
        return Outcome(path, "skipped", f"unreadable: {exc}")
    if actual != rec.sha256:
        return Outcome(path, "skipped", "changed since it was indexed (sha256 differs): re-index and review again")
    real = os.path.join(os.path.realpath(os.path.dirname(os.path.abspath(path))), os.path.basename(path))
    target = _free_name(dest_dir / os.path.relpath(real, root))
    entry: dict[str, object] = {
        "original": path,
        "new": str(target),
        "sha256": rec.sha256,
        "time": time.time(),
        "reason": reason,
        "item_id": rec.id,
    }
    log.write({"state": "planned", **entry})
    try:
        final = _move_no_overwrite(path, target, rec.sha256)
    except OSError as exc:
        log.write({"state": "failed", **entry, "error": str(exc)})
        return Outcome(path, "skipped", f"could not move: {exc}")
    entry["new"] = str(final)
    log.write({"state": "moved", **entry, "time": time.time()})
    return Outcome(path, "moved", new_path=str(final))


# -- restore --------------------------------------------------------------------------------------
def read_manifest(path: str | os.PathLike[str]) -> tuple[dict[str, object], list[dict[str, object]]]:
    """(header, one entry per original path: its last state). A torn last line (kill -9) is ignored."""
    header: dict[str, object] = {}
    last: dict[str, dict[str, object]] = {}
    candidates: dict[str, list[str]] = {}
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise QuarantineError(f"cannot read manifest {path}: {exc}") from exc
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as exc:
            if number == len(lines):
                continue  # the write that a kill interrupted; its move had not started
            raise QuarantineError(f"{path}:{number}: not a lookalike manifest line ({exc})") from exc
        if entry.get("state") == "header":
            header = entry
            continue
        original = str(entry["original"])
        candidates.setdefault(original, [])
        if entry.get("new") and entry["new"] not in candidates[original]:
            candidates[original].append(str(entry["new"]))
        last[original] = entry
    if not header and not last:
        raise QuarantineError(f"{path} is empty or not a lookalike manifest")
    entries = []
    for original, entry in last.items():
        entries.append({**entry, "candidates": candidates[original]})
    return header, entries


def restore_files(manifest: str | os.PathLike[str]) -> tuple[RestoreReport, dict[str, object]]:
    """Move every quarantined file of ``manifest`` back (sha256 verified). Re-indexing is the caller's."""
    header, entries = read_manifest(manifest)
    report = RestoreReport(str(manifest))
    for entry in entries:
        outcome = _restore_one(entry)
        (report.restored if outcome.status == "restored" else report.skipped).append(outcome)
    return report, header


def _restore_one(entry: dict[str, object]) -> Outcome:
    original = str(entry["original"])
    sha = str(entry["sha256"])
    state = entry.get("state")
    news = [str(n) for n in entry.get("candidates", [])]  # type: ignore[union-attr]
    if os.path.lexists(original):
        try:
            same = sha256_file(original) == sha
        except OSError:
            same = False
        if not same:
            return Outcome(original, "skipped", "another file now has this name; the quarantined copy stays")
        for new in news:  # killed between link and unlink: two names, one file; drop the extra name
            if os.path.lexists(new) and os.path.samefile(new, original):
                os.unlink(new)
        if state in ("failed",):
            return Outcome(original, "skipped", "was never moved")
        return Outcome(original, "restored", "already in place")
    for new in news:
        if not os.path.lexists(new):
            continue
        if sha256_file(new) != sha:
            return Outcome(original, "skipped", f"the quarantined file {new} changed (sha256 differs); left there")
        try:
            _move_no_overwrite(new, Path(original), sha, exact=True)
        except OSError as exc:
            return Outcome(original, "skipped", f"could not move back: {exc}")
        return Outcome(original, "restored", new_path=new)
    return Outcome(original, "skipped", "not found in the quarantine folder nor at its original path")


def restore(manifest: str | os.PathLike[str], index: Index | None = None) -> RestoreReport:
    """Undo a quarantine: move the files back and re-add them to the index.

    ``index`` defaults to the one named in the manifest header. Re-adding reuses vectors of contents
    still indexed (exact copies) and embeds the others.
    """
    report, header = restore_files(manifest)
    owned = False
    if index is None:
        db = header.get("db")
        if not db:
            raise QuarantineError(f"{manifest} does not name its index; pass the index (--db)")
        index = Index.open(str(db), create=False)
        owned = True
    try:
        paths = [o.path for o in report.restored if os.path.isfile(o.path)]
        if paths:
            roots = index.store.get_meta("roots")
            ingest_report = index.add(paths, remove_missing=False)
            index.store.set_meta("roots", roots)  # restored files lie in known roots; keep the list clean
            report.reindexed = ingest_report.added + ingest_report.updated + ingest_report.unchanged
            report.skipped.extend(
                Outcome(s.path, "skipped", f"not re-indexed: {s.reason}") for s in ingest_report.skipped
            )
    finally:
        if owned:
            index.close()
    return report
