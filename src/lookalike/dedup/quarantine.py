"""Quarantine: move files out of the collection with a manifest that ``restore`` can always undo.

Safety rules, each covered by a test:

* Nothing is deleted. A move is ``os.link`` to the new name then ``os.unlink`` of the old one (the
  data always has at least one name, and ``link`` never overwrites), or, across file systems, a copy
  into ``.NAME.lookalike-partial`` that is fsynced, verified by sha256 and linked to its name before
  the original name is removed.
* The manifest entry (``state: "planned"``) is written and fsynced *before* each move and a
  ``"moved"`` entry after it, so ``kill -9`` at any moment leaves a manifest from which
  :func:`restore` finds the file under one of its two names.
* A partial copy is locked (``flock``) while it is written, so a later run tells a killed run's
  leftover (unlocked: reused if it verifies, rewritten otherwise) from a copy in progress (left alone).
* A file is moved only if its sha256 still equals the indexed one (changed or deleted since the
  review: skipped and reported), and only if it lies inside an indexed root. Its index item goes
  while both names exist, so a killed run never leaves the index naming a file that is gone.
* Restore writes only inside the indexed folders (the index's roots, and the manifest header's when
  it records them) and takes files only from the manifest's quarantine folder: a crafted or edited
  manifest cannot place a file anywhere else.
* Names in the quarantine folder never collide: ``a.jpg`` becomes ``a (1).jpg``, ``a (2).jpg`` ...
* Opt-in links (``link="hard"|"symbolic"``): a duplicate's name is then taken by a link to its kept
  copy. The link is made first, under ``.NAME.lookalike-link`` beside the duplicate (a hard link that
  would cross file systems fails here, before anything moves), and renamed over the duplicate's name
  only once the original is safe in the quarantine folder: the name always holds the original or the
  link, and the manifest records the link, which restore removes (only when it still is that link)
  before moving the original back.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import stat
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lookalike.durable import fsync_dir
from lookalike.index import Index
from lookalike.store.base import ItemRecord, Store, StoreError

try:
    import fcntl
except ImportError:  # pragma: no cover - no advisory locks (Windows): every leftover partial counts as stale
    fcntl = None  # type: ignore[assignment]

MANIFEST_VERSION = 1
#: A cross-device copy is written under ``.NAME`` + this suffix and gets its real name once verified.
PARTIAL_SUFFIX = ".lookalike-partial"
#: A link to the kept copy waits under ``.NAME`` + this suffix until it replaces the duplicate's name.
LINK_SUFFIX = ".lookalike-link"
LINK_KINDS = ("hard", "symbolic")
_CROSS_DEVICE = (errno.EXDEV, errno.EPERM, errno.ENOTSUP, errno.EMLINK)
_OPEN_FLAGS = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)


class QuarantineError(StoreError):
    """A quarantine or restore that cannot start (bad folder, unreadable manifest)."""


class LinkError(OSError):
    """A link to the kept copy that cannot be made (a hard link across file systems); nothing moved."""


class PartialInTheWay(OSError):
    """The name a cross-device copy needs is a symlink, folder or linked file: not ours to write."""


@dataclass
class Outcome:
    path: str
    status: str  # moved | restored | skipped
    reason: str = ""
    new_path: str = ""
    #: a moved duplicate whose name now holds a link: "hard" or "symbolic" (and ``link_target``)
    link: str = ""
    link_target: str = ""

    def to_dict(self) -> dict[str, str]:
        out = {"path": self.path, "status": self.status}
        if self.new_path:
            out["new_path"] = self.new_path
        if self.link:
            out["link"], out["link_target"] = self.link, self.link_target
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


def partial_path(dst: str | os.PathLike[str]) -> Path:
    """Where a cross-device copy to ``dst`` is written until it is verified (hidden, beside ``dst``)."""
    dst = Path(dst)
    return dst.with_name(f".{dst.name}{PARTIAL_SUFFIX}")


def _hard_link(src: str, dst: Path) -> None:
    """``os.link`` of the name itself; its own function so a test can stand in for a second disk."""
    os.link(src, dst, follow_symlinks=False)


def _move_no_overwrite(
    src: str,
    dst: Path,
    sha256: str,
    *,
    exact: bool = False,
    placed: Callable[[], None] | None = None,
    replacement: Path | None = None,
) -> Path:
    """Move ``src`` to ``dst`` (or a free variant of it) without ever overwriting or losing data.

    ``exact``: use exactly ``dst`` and raise ``FileExistsError`` if it is taken. ``placed`` runs once
    the data is safe under its new name and before the old name goes (quarantine drops the index item
    there, so a kill at any point never leaves the index naming a file that no longer exists).
    ``replacement``: a prepared link renamed over ``src`` (atomically) instead of unlinking it.
    """
    dst.parent.mkdir(parents=True, exist_ok=True)
    if _resume_linked_copy(src, dst, sha256, placed, replacement):
        return dst
    while True:
        if not exact:
            dst = _free_name(dst)
        try:
            _hard_link(src, dst)
        except FileExistsError:
            if exact:
                raise
            continue  # someone took the name in between: pick the next one
        except OSError as exc:
            if exc.errno not in _CROSS_DEVICE:
                raise
            try:
                _copy_across(src, dst, sha256, placed, replacement)
            except FileExistsError:
                if exact:
                    raise
                continue
            return dst
        _drop_source(src, dst, placed, replacement)
        return dst


def _drop_source(src: str, dst: Path, placed: Callable[[], None] | None, replacement: Path | None = None) -> None:
    """The last step of a move: the new name is durable, then the caller's hook, then the old name goes
    (or, with ``replacement``, is atomically taken by that link: never a moment with neither)."""
    fsync_dir(dst.parent)
    if placed is not None:
        placed()
    if replacement is not None:
        os.replace(replacement, src)
    else:
        os.unlink(src)
    fsync_dir(os.path.dirname(src))


def _copy_across(
    src: str, dst: Path, sha256: str, placed: Callable[[], None] | None, replacement: Path | None = None
) -> None:
    """Cross-device move: copy into the locked partial (or reuse the verified one a killed run left),
    fsync, verify, link it to ``dst`` (exclusive), drop the source, and only then the partial name.

    The partial outlives the source so that a kill after the link leaves the evidence (partial and
    ``dst`` one file) that :func:`_resume_linked_copy` and restore use to finish the move.
    """
    tmp = partial_path(dst)
    fd = _lock_partial(tmp, create=True)
    assert fd is not None
    try:
        try:
            _fill_partial(fd, tmp, src, sha256)
            os.link(tmp, dst)  # exclusive: raises FileExistsError rather than overwrite
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)  # ours (locked) and the source is untouched: nothing is lost
            raise
        _drop_source(src, dst, placed, replacement)
        with contextlib.suppress(OSError):  # the move is done; a leftover name is cleaned up by restore
            os.unlink(tmp)
        fsync_dir(dst.parent)
    finally:
        os.close(fd)


def _fill_partial(fd: int, tmp: Path, src: str, sha256: str) -> None:
    """Make the locked partial ``tmp`` a durable, verified copy of ``src``: keep it if a killed run
    already finished it, else rewrite it from the start."""
    size = os.fstat(fd).st_size
    if size and size == os.stat(src).st_size and sha256_file(tmp) == sha256:
        os.fsync(fd)  # complete and verified; make sure it is on disk too
        shutil.copystat(src, tmp)
        return
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    with open(src, "rb") as fin, os.fdopen(os.dup(fd), "wb") as fout:  # a dup: closing it keeps our lock
        shutil.copyfileobj(fin, fout, 1 << 20)
        fout.flush()
    os.fsync(fd)
    shutil.copystat(src, tmp)
    if sha256_file(tmp) != sha256:
        raise OSError(errno.EIO, f"the copy of {src} does not verify (sha256 differs); the original is left in place")


def _lock_partial(tmp: Path, *, create: bool) -> int | None:
    """Open ``tmp`` locked, a partial copy that no live process is writing; None if there is none.

    A killed run's ``flock`` died with it, so a partial we can lock is a leftover and one we cannot
    is another process's copy in progress (``EBUSY``). A symlink, folder or (to be written) a file with
    other names is not a partial of ours: refused, never written through.
    """
    flags = (os.O_RDWR | os.O_CREAT if create else os.O_RDONLY) | _OPEN_FLAGS
    while True:
        try:
            fd = os.open(tmp, flags, 0o600)
        except FileNotFoundError:
            if create:
                raise
            return None
        except OSError as exc:
            raise PartialInTheWay(
                f"{tmp} is in the way and is not a partial copy lookalike can use; move it away"
            ) from exc
        try:
            if fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    raise OSError(
                        errno.EBUSY, f"another process is copying to {tmp}; run again once it has finished"
                    ) from None
            mine = os.fstat(fd)
            try:
                there = os.lstat(tmp)
            except FileNotFoundError:
                there = None
            if there is None or (there.st_dev, there.st_ino) != (mine.st_dev, mine.st_ino):
                os.close(fd)  # its writer finished (or removed it) between our open and our lock
                continue
            if not stat.S_ISREG(mine.st_mode) or (create and mine.st_nlink != 1):
                raise PartialInTheWay(f"{tmp} is in the way and is not a partial copy lookalike can use; move it away")
        except BaseException:
            with contextlib.suppress(OSError):
                os.close(fd)
            raise
        return fd


def _resume_linked_copy(
    src: str, dst: Path, sha256: str, placed: Callable[[], None] | None, replacement: Path | None = None
) -> bool:
    """Finish a cross-device move of ``src`` that a kill stopped after its verified copy got the name
    ``dst`` (the leftover partial and ``dst`` are one file): drop the source and the partial. False if
    there is no such copy."""
    tmp = partial_path(dst)
    if not (os.path.lexists(tmp) and os.path.lexists(dst)):
        return False
    try:
        fd = _lock_partial(tmp, create=False)
    except OSError as exc:
        if exc.errno == errno.EBUSY:
            raise
        return False  # not ours: the normal move picks another name or reports the clash
    if fd is None:
        return False
    try:
        if not _same_inode(fd, dst) or sha256_file(dst) != sha256:
            return False
        _drop_source(src, dst, placed, replacement)
        os.unlink(tmp)
        fsync_dir(dst.parent)
        return True
    finally:
        os.close(fd)


def _same_inode(fd: int, path: str | os.PathLike[str]) -> bool:
    try:
        there = os.lstat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (there.st_dev, there.st_ino) == (mine.st_dev, mine.st_ino)


def _linked_partial(dst: str | os.PathLike[str]) -> bool:
    """Whether a leftover partial beside ``dst`` is the same file as ``dst`` (a copy that got its name)."""
    tmp = partial_path(dst)
    try:
        fd = _lock_partial(tmp, create=False)
    except OSError:
        return False
    if fd is None:
        return False
    try:
        return _same_inode(fd, dst)
    finally:
        os.close(fd)


def _drop_leftover_partial(dst: str | os.PathLike[str]) -> None:
    """Remove the partial copy a killed run left beside ``dst``; only once its data is safe elsewhere.

    Left alone when another process is writing it or it is not a plain file of ours.
    """
    tmp = partial_path(dst)
    try:
        fd = _lock_partial(tmp, create=False)
    except OSError:
        return
    if fd is None:
        return
    try:
        os.unlink(tmp)
        fsync_dir(tmp.parent)
    finally:
        os.close(fd)


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
    link: str | None = None,
    link_to: Sequence[ItemRecord] | None = None,
) -> QuarantineReport:
    """Move these indexed files into ``dest`` (keeping their path relative to their indexed root).

    Writes a JSON-lines manifest (default ``dest/manifest-<time>.jsonl``), skips files that changed
    or vanished since they were indexed (by sha256) or lie outside the indexed roots, and removes each
    moved item from the index as its file moves (a killed run leaves an index of files that exist).
    ``reason`` is one text for all, or one per record.

    ``link`` (``"hard"`` or ``"symbolic"``, with ``link_to``: the kept copy of each record): leave a
    link to the kept copy where each file was, so paths that others use keep working while the space
    is freed. A file whose link cannot be made (its kept copy changed or gone, a hard link across file
    systems) is skipped and stays where it is.
    """
    reasons = [reason] * len(records) if isinstance(reason, str) else list(reason)
    if len(reasons) != len(records):
        raise ValueError("one reason per record")
    if link is not None and link not in LINK_KINDS:
        raise QuarantineError(f"unknown link kind {link!r}; choose one of {', '.join(LINK_KINDS)}")
    if link is not None and (link_to is None or len(link_to) != len(records)):
        raise ValueError("a link needs the kept copy of every record (link_to)")
    targets: list[ItemRecord | None] = (
        list(link_to) if link is not None and link_to is not None else [None] * len(records)
    )
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
            "roots": roots,
            "reason": reason if isinstance(reason, str) else "per file",
            "link": link,
            "time": time.time(),
        }
    )
    try:
        for rec, why, target in zip(records, reasons, targets, strict=True):
            kept = (link, target) if link is not None and target is not None else None
            outcome = _quarantine_one(rec, roots, dest_dir, why, log, _IndexDrop(store, report, rec), kept)
            (report.moved if outcome.status == "moved" else report.skipped).append(outcome)
    finally:
        log.close()
    return report


class _IndexDrop:
    """The ``placed`` hook of one move: drops the item while the file has both names (so the index never
    names a file that is gone), and puts it back if the old name then cannot be removed."""

    def __init__(self, store: Store, report: QuarantineReport, rec: ItemRecord) -> None:
        self.store, self.report, self.rec = store, report, rec
        self.vector: np.ndarray | None = None

    def __call__(self) -> None:
        self.vector = self.store.vectors([self.rec.id])
        self.report.removed_from_index += self.store.remove([self.rec.id])

    def undo(self) -> None:
        if self.vector is not None and os.path.lexists(self.rec.path):
            self.store.add([self.rec], self.vector)
            self.report.removed_from_index -= 1
            self.vector = None


def link_path(path: str | os.PathLike[str]) -> Path:
    """Where the link that will take ``path``'s name waits (hidden, beside it)."""
    path = Path(path)
    return path.with_name(f".{path.name}{LINK_SUFFIX}")


def _make_hard_link(target: str, at: Path) -> None:
    """``os.link`` for a link to a kept copy; its own function so a test can stand in for a second disk."""
    os.link(target, at, follow_symlinks=False)


def is_link_to(path: str | os.PathLike[str], kind: str, target: str, not_same_as: Sequence[str] = ()) -> bool:
    """Whether ``path`` is exactly the link quarantine made: a symlink reading ``target``, or another
    name of ``target``'s file (``target`` still there, so removing ``path`` loses no data) that is not
    the quarantined original (``not_same_as``: a kill can leave original and quarantined copy one file)."""
    path = str(path)
    if kind == "symbolic":
        try:
            return os.path.islink(path) and os.readlink(path) == target
        except OSError:
            return False
    if kind != "hard" or os.path.islink(path) or not os.path.isfile(path) or os.path.islink(target):
        return False
    try:
        if not os.path.samefile(path, target):
            return False
        return not any(os.path.lexists(n) and os.path.samefile(path, n) for n in not_same_as)
    except OSError:
        return False


def _prepare_link(path: str, kind: str, target: str) -> Path:
    """Make the link to ``target`` under :func:`link_path` (a killed run's one is reused after a check).

    Raises :class:`LinkError` (a hard link across file systems, a name in the way): nothing moved.
    """
    at = link_path(path)
    if os.path.lexists(at):
        if not is_link_to(at, kind, target, [path]):
            raise LinkError(errno.EEXIST, f"{at} is in the way and is not a link lookalike made; move it away")
        os.unlink(at)
    try:
        if kind == "symbolic":
            os.symlink(target, at)
        else:
            _make_hard_link(target, at)
    except OSError as exc:
        if kind == "hard" and exc.errno in _CROSS_DEVICE:
            raise LinkError(
                exc.errno,
                f"a hard link cannot join two file systems ({os.path.dirname(path)} and {os.path.dirname(target)}): "
                "not moved; use a symbolic link",
            ) from exc
        raise LinkError(exc.errno, f"cannot make the link: {exc.strerror or exc}") from exc
    fsync_dir(at.parent)
    return at


def _drop_link(path: str | os.PathLike[str], kind: str, target: str, not_same_as: Sequence[str] = ()) -> bool:
    """Remove ``path`` if it is quarantine's link to ``target`` (only a link: no data goes); whether it did."""
    if not is_link_to(path, kind, target, not_same_as):
        return False
    os.unlink(path)
    fsync_dir(os.path.dirname(os.path.abspath(path)))
    return True


def _check_kept(path: str, kept: ItemRecord) -> str:
    """Why the kept copy cannot be linked to (empty when it can): it must be the file that was reviewed."""
    if os.path.islink(kept.path) or not os.path.isfile(kept.path):
        return f"the kept copy {kept.path} is missing or not a regular file: not linked, not moved"
    try:
        if os.path.samefile(path, kept.path):
            return f"already the same file as the kept copy {kept.path}"
        if sha256_file(kept.path) != kept.sha256:
            return f"the kept copy {kept.path} changed since it was indexed (sha256 differs): not linked, not moved"
    except OSError as exc:
        return f"the kept copy {kept.path} is unreadable: {exc}"
    return ""


def _quarantine_one(
    rec: ItemRecord,
    roots: Sequence[str],
    dest_dir: Path,
    reason: str,
    log: _Manifest,
    placed: _IndexDrop,
    kept: tuple[str, ItemRecord] | None = None,
) -> Outcome:
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
    if kept is not None:
        refusal = _check_kept(path, kept[1])
        if refusal:
            return Outcome(path, "skipped", refusal)
    real = os.path.join(os.path.realpath(os.path.dirname(os.path.abspath(path))), os.path.basename(path))
    wanted = dest_dir / os.path.relpath(real, root)
    # A killed cross-device move of this file may have left its verified copy at the wanted name: finish it.
    target = wanted if _linked_partial(wanted) else _free_name(wanted)
    entry: dict[str, object] = {
        "original": path,
        "new": str(target),
        "sha256": rec.sha256,
        "time": time.time(),
        "reason": reason,
        "item_id": rec.id,
    }
    if kept is not None:
        entry.update({"link": kept[0], "link_target": kept[1].path, "link_target_sha256": kept[1].sha256})
    log.write({"state": "planned", **entry})
    prepared = None
    try:
        if kept is not None:
            prepared = _prepare_link(path, kept[0], kept[1].path)
        final = _move_no_overwrite(path, target, rec.sha256, placed=placed, replacement=prepared)
    except OSError as exc:
        placed.undo()  # e.g. a read-only folder refused the unlink: the file stays, so does its item
        if prepared is not None and os.path.lexists(prepared) and kept is not None:
            with contextlib.suppress(OSError):
                _drop_link(prepared, kept[0], kept[1].path, [path])
        log.write({"state": "failed", **entry, "error": str(exc)})
        if isinstance(exc, LinkError):
            return Outcome(path, "skipped", str(exc.strerror))
        return Outcome(path, "skipped", f"could not move: {exc}")
    entry["new"] = str(final)
    log.write({"state": "moved", **entry, "time": time.time()})
    if kept is None:
        return Outcome(path, "moved", new_path=str(final))
    return Outcome(path, "moved", new_path=str(final), link=kept[0], link_target=kept[1].path)


# -- restore --------------------------------------------------------------------------------------
def read_manifest(path: str | os.PathLike[str]) -> tuple[dict[str, object], list[dict[str, object]]]:
    """(header, one entry per original path: its last state). A torn last line (kill -9) is ignored."""
    header: dict[str, object] = {}
    last: dict[str, dict[str, object]] = {}
    candidates: dict[str, list[str]] = {}
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
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
        if not isinstance(entry, dict):
            raise QuarantineError(f"{path}:{number}: not a lookalike manifest entry (a JSON object)")
        if entry.get("state") == "header":
            header = entry
            continue
        if not all(isinstance(entry.get(key), str) for key in ("original", "sha256")) or not isinstance(
            entry.get("new", ""), str
        ):
            raise QuarantineError(f"{path}:{number}: a manifest entry needs text 'original', 'sha256' and 'new'")
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


def restore_files(
    manifest: str | os.PathLike[str], roots: Sequence[str] | None = None
) -> tuple[RestoreReport, dict[str, object]]:
    """Move every quarantined file of ``manifest`` back (sha256 verified). Re-indexing is the caller's.

    A file goes back only inside ``roots`` (pass the index's: the manifest is just a file anyone can
    edit) and inside the roots the manifest's header recorded; with neither, nothing is restored.
    Files are taken only from the header's quarantine folder. Other entries are skipped, each with
    its reason.
    """
    header, entries = read_manifest(manifest)
    root_sets = [[str(r) for r in roots]] if roots is not None else []
    header_roots = header.get("roots")
    if isinstance(header_roots, list):
        root_sets.append([str(r) for r in header_roots])
    qdir = header.get("quarantine")
    report = RestoreReport(str(manifest))
    for entry in entries:
        outcome = _restore_one(entry, root_sets, str(qdir) if isinstance(qdir, str) else None)
        (report.restored if outcome.status == "restored" else report.skipped).append(outcome)
    return report, header


def _real(path: str) -> str:
    """``path`` with the symlinks in its folders resolved (the name itself kept)."""
    return os.path.join(os.path.realpath(os.path.dirname(os.path.abspath(path))), os.path.basename(path))


def _refuse_original(original: str, root_sets: Sequence[Sequence[str]]) -> str:
    """Why restore must not write ``original`` (empty when it may): it must lie inside the indexed folders."""
    if not os.path.isabs(original):
        return "not an absolute path: restore refuses it"
    if ".." in Path(original).parts:
        return "the path climbs out of its folder with '..': restore refuses it"
    if not root_sets:
        return "the manifest names no indexed folders: restore with the index (--db) to check where files go"
    for roots in root_sets:
        if containing_root(original, roots) is None:
            return f"outside the indexed folders ({', '.join(roots) or 'none recorded'}): restore never writes there"
    return ""


def _refuse_candidate(new: str, qdir: str | None) -> str:
    """Why restore must not take ``new`` (empty when it may): it must lie inside the quarantine folder."""
    if qdir is None:
        return "the manifest names no quarantine folder: restore refuses to take files from elsewhere"
    if not os.path.isabs(new) or ".." in Path(new).parts:
        return f"the quarantined file {new} is not a plain absolute path: refused"
    real_qdir = os.path.realpath(qdir)
    if not _inside(_real(new), real_qdir) or _real(new) == real_qdir:
        return f"the quarantined file {new} is outside the quarantine folder {qdir}: restore never takes it"
    return ""


def _restore_one(entry: dict[str, object], root_sets: Sequence[Sequence[str]], qdir: str | None) -> Outcome:
    original = str(entry["original"])
    sha = str(entry["sha256"])
    state = entry.get("state")
    news = [str(n) for n in entry.get("candidates", [])]  # type: ignore[union-attr]
    refusal = _refuse_original(original, root_sets) or next(
        filter(None, (_refuse_candidate(n, qdir) for n in news)), ""
    )
    if refusal:
        return Outcome(original, "skipped", refusal)
    kind, target = entry.get("link"), entry.get("link_target")
    if kind in LINK_KINDS and isinstance(target, str):
        _drop_link(link_path(original), str(kind), target, [original, *news])  # a killed run's leftover
        if is_link_to(original, str(kind), target, news):
            found = _verified_candidate(news, sha)
            if found is None:
                return Outcome(original, "skipped", "the quarantined file is missing or changed; the link stays")
            _drop_link(original, str(kind), target, news)  # only a link: the original comes back next
    if os.path.lexists(original):
        try:
            same = sha256_file(original) == sha
        except OSError:
            same = False
        if not same:
            return Outcome(original, "skipped", "another file now has this name; the quarantined copy stays")
        for new in news:
            _drop_extra_copy(new, original, sha)
        _drop_leftover_partial(original)
        if state in ("failed",):
            return Outcome(original, "skipped", "was never moved")
        return Outcome(original, "restored", "already in place")
    for new in news:
        if not os.path.lexists(new):
            continue
        if os.path.islink(new) or not os.path.isfile(new):
            return Outcome(original, "skipped", f"the quarantined {new} is not a regular file; left there")
        if sha256_file(new) != sha:
            return Outcome(original, "skipped", f"the quarantined file {new} changed (sha256 differs); left there")
        try:
            _move_no_overwrite(new, Path(original), sha, exact=True)
        except OSError as exc:
            return Outcome(original, "skipped", f"could not move back: {exc}")
        _drop_leftover_partial(new)
        return Outcome(original, "restored", new_path=new)
    return Outcome(original, "skipped", "not found in the quarantine folder nor at its original path")


def _verified_candidate(news: Sequence[str], sha: str) -> str | None:
    """The first quarantined name that is a regular file with the recorded content, or None."""
    for new in news:
        if os.path.lexists(new) and not os.path.islink(new) and os.path.isfile(new):
            with contextlib.suppress(OSError):
                if sha256_file(new) == sha:
                    return new
    return None


def _drop_extra_copy(new: str, original: str, sha: str) -> None:
    """``original`` is in place and verified: remove the quarantine-side name ``new`` that an interrupted
    move left, and its partial. Only when it is provably the same data: the same file (killed between
    link and unlink), or a verified copy that a leftover partial shows to be a cross-device copy that
    got its name (killed before the source went). Anything else stays where it is."""
    if os.path.lexists(new) and not os.path.islink(new) and os.path.isfile(new):
        copied = (_linked_partial(original) or _linked_partial(new)) and sha256_file(new) == sha
        if copied or os.path.samefile(new, original):
            os.unlink(new)
            fsync_dir(os.path.dirname(new))
    _drop_leftover_partial(new)


def restore(manifest: str | os.PathLike[str], index: Index | None = None) -> RestoreReport:
    """Undo a quarantine: move the files back and re-add them to the index.

    ``index`` defaults to the one named in the manifest header. Files go back only inside the index's
    folders (its recorded roots). Re-adding reuses vectors of contents still indexed (exact copies)
    and embeds the others.
    """
    owned = False
    if index is None:
        header, _ = read_manifest(manifest)
        db = header.get("db")
        if not db:
            raise QuarantineError(
                f"{manifest} does not name its index; name the index to restore into", parameters=("db",)
            )
        index = Index.open(str(db), create=False)
        owned = True
    try:
        roots = index.store.get_meta("roots")
        report, _ = restore_files(manifest, [str(r) for r in roots or []])  # type: ignore[union-attr]
        paths = [o.path for o in report.restored if os.path.isfile(o.path)]
        if paths:
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
