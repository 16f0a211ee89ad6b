"""Writing outputs safely: what ``--out`` may name, atomic swaps, interrupts, JSON.

The rules (each refusal is one line, exit 2, raised before any work starts):

- ``--out`` names a folder varcomp may *replace*: a new path, an empty folder, or a folder that
  holds only what an earlier varcomp run wrote (recognised by the marker file
  :data:`MARKER`, which lists those files). A folder with anything else in it, the current
  folder or one above it, a folder holding an input file, or a path whose last component is
  not a folder are refused. Symlinks are resolved: the folder the link points to is replaced
  and the link is kept.
- Output is written into a temporary folder beside the destination and swapped into place only
  when complete, with SIGINT/SIGTERM held back during the two renames, so an interrupted run
  leaves any earlier output untouched, and a run interrupted after the swap says that its
  output is complete (:data:`COMMITTED`).
- A file output (``varcomp simulate --out``) replaces only a regular file, never a folder, a
  device, a pipe or a socket, through a temporary file renamed into place.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import stat
import sys
import tempfile
import threading
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from varcomp.models.data import DataError

__all__ = ["COMMITTED", "MARKER", "checkpoint", "dump_json", "json_text", "resolve_out",
           "resolve_out_file", "stop_on_signals", "write_atomically", "write_file_atomically"]

MARKER = ".varcomp-output"
"""The file every output folder of varcomp holds: JSON listing the files varcomp wrote there."""
NAME_MAX = 255  # bytes in one path component on the file systems we write to
COMMITTED: list[Path] = []
"""Outputs swapped into place by this process (the CLI's interrupt message names them)."""


# ---------------------------------------------------------------------------- --out checks
def _real(path: str | os.PathLike) -> Path:
    """Absolute path with every symlink of its existing part resolved."""
    return Path(os.path.abspath(os.path.expanduser(os.fspath(path)))).resolve()


def _name_ok(out: Path, given: object) -> None:
    for part in out.parts[1:]:
        if len(part.encode("utf-8", "surrogateescape")) > NAME_MAX:
            raise DataError(f"--out {given}: the name '{part[:40]}...' is longer than "
                            f"{NAME_MAX} bytes: choose a shorter name")


def _writable_parent(out: Path, given: object) -> None:
    parent = out.parent
    probe = parent
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise DataError(f"cannot create output {given}: {probe} is not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise DataError(f"output {given} is not writable ({probe}): choose another --out")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=parent, prefix=".vc-probe-"):
            pass
    except OSError as exc:
        raise DataError(f"cannot write to {parent}: {exc.strerror or exc}") from None


def marker_files(folder: Path) -> set[str] | None:
    """The files an earlier varcomp run wrote into ``folder`` (None: not a varcomp output)."""
    mark = folder / MARKER
    if not mark.is_file() or mark.is_symlink():
        return None
    try:
        info = json.loads(mark.read_text(encoding="utf-8"))
        files = info["files"]
        if info.get("written_by") != "varcomp" or not isinstance(files, list):
            return None
        return {str(f) for f in files}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def resolve_out(out: str | os.PathLike, *, inputs: Iterable[str | os.PathLike] = ()) -> Path:
    """Check that ``--out`` may be (re)placed by a varcomp output folder; returns its real path.

    ``inputs`` are the files the run reads: an output folder equal to one of them or holding
    one is refused (replacing it would delete the input).
    """
    given = os.fspath(out)
    if not given.strip():
        raise DataError("--out is empty: give a folder name, e.g. --out results")
    real = _real(out)
    _name_ok(real, given)
    cwd = Path.cwd().resolve()
    if real == cwd or real in cwd.parents:
        raise DataError(f"--out {given} is the current folder or one above it: varcomp replaces "
                        f"its output folder as a whole; give a new folder, e.g. --out results")
    for inp in inputs:
        ri = _real(inp)
        if ri == real or real in ri.parents:
            raise DataError(f"--out {given} holds the input {inp}: replacing it would delete the "
                            f"input; choose another --out")
    if real.exists() or real.is_symlink():
        if not real.is_dir():
            raise DataError(f"--out {given} exists and is not a folder: choose another --out")
        present = {p.name for p in real.iterdir()}
        if present:
            ours = marker_files(real)
            if ours is None:
                raise DataError(f"--out {given} is a folder varcomp did not write (no {MARKER} "
                                f"file) and is not empty: choose a new or empty folder")
            foreign = sorted(present - ours - {MARKER})
            if foreign:
                shown = ", ".join(foreign[:3]) + (" ..." if len(foreign) > 3 else "")
                raise DataError(f"--out {given} holds files varcomp did not write ({shown}): "
                                f"move them or choose another --out")
    _writable_parent(real, given)
    return real


def resolve_out_file(out: str | os.PathLike, *, suffixes: Iterable[str]) -> Path:
    """Check a file ``--out``: a known suffix, a regular file or nothing at that path."""
    given = os.fspath(out)
    if not given.strip():
        raise DataError("--out is empty: give a file name, e.g. --out sim.csv")
    real = _real(out)
    _name_ok(real, given)
    name = real.name.lower()
    allowed = tuple(suffixes)
    if not name.endswith(allowed):
        raise DataError(f"--out {given}: unknown file type; name it {', '.join(allowed)}")
    if real.exists():
        mode = real.stat().st_mode
        if stat.S_ISDIR(mode):
            raise DataError(f"--out {given} is a folder: give a file name")
        if not stat.S_ISREG(mode):
            raise DataError(f"--out {given} exists and is not a regular file (a device, pipe or "
                            f"socket): choose another --out")
    if not real.parent.is_dir():
        raise DataError(f"cannot write {given}: folder {real.parent} does not exist")
    if not os.access(real.parent, os.W_OK | os.X_OK):
        raise DataError(f"cannot write {given}: folder {real.parent} is not writable")
    return real


# ---------------------------------------------------------------------------- interrupts
_STOP = threading.Event()
_DEPTH = [0]
_HOLD = [0]


@contextmanager
def stop_on_signals():
    """SIGINT and SIGTERM raise KeyboardInterrupt, and are remembered.

    Remembering matters: a signal that arrives while C code calls back into Python (numba's
    LLVM callbacks, for one) raises inside the callback, where the exception is printed and
    dropped. :func:`checkpoint` raises it again at the next safe point, so a run that was
    interrupted never writes its output. Python would print such a dropped interrupt with a
    traceback ("Exception ignored on calling ctypes callback function"); while this context is
    active, :data:`sys.unraisablehook` silences exactly those (remembered) interrupts, so stderr
    carries only the one-line message; any error that escapes after a signal is reported as the
    interrupt it was. Nestable; a no-op outside the main thread.
    """
    def handler(signum, frame):
        _STOP.set()
        if not _HOLD[0]:
            raise KeyboardInterrupt

    def unraisable(info):
        if isinstance(info.exc_value, KeyboardInterrupt) and _STOP.is_set():
            return  # remembered: checkpoint() raises it again at the next safe point
        old_hook(info)

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    if _DEPTH[0] == 0:
        _STOP.clear()  # the outermost context starts a fresh run
    old = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    old_hook, sys.unraisablehook = sys.unraisablehook, unraisable
    _DEPTH[0] += 1
    try:
        yield
    except Exception as exc:
        if _STOP.is_set():  # an interrupt some library caught and re-raised as another error
            raise KeyboardInterrupt from exc
        raise
    finally:
        _DEPTH[0] -= 1
        sys.unraisablehook = old_hook
        for sig, h in old.items():
            signal.signal(sig, h)


def checkpoint() -> None:
    """Raise KeyboardInterrupt if a signal arrived (see :func:`stop_on_signals`)."""
    if _STOP.is_set():
        raise KeyboardInterrupt


@contextmanager
def _signals_held():
    """Hold signals within :func:`stop_on_signals` until the block ends.

    A signal is remembered but raised only when the block ends (by :func:`checkpoint`), so the
    block (a pair of renames) runs to its end. The flag is
    read by the Python-level handler, which always runs in the main thread; a signal mask would
    not do, as the kernel may deliver the signal to another thread.
    """
    _HOLD[0] += 1
    try:
        yield
    finally:
        _HOLD[0] -= 1
    checkpoint()


# ---------------------------------------------------------------------------- atomic writes
def _fresh_dir(parent: Path, tag: str) -> Path:
    tmp = Path(tempfile.mkdtemp(dir=parent, prefix=f".vc-{tag}-"))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes 0700; the output is an ordinary folder
    return tmp


def write_atomically(out: Path, writer: Callable[[Path], None], *,
                     inputs: Iterable[str | os.PathLike] = ()) -> Path:
    """Call ``writer(tmp_dir)`` then swap the complete folder into place as ``out``.

    ``out`` is checked by :func:`resolve_out` first (again, as the folder may have changed since
    the run started). The folder gets the :data:`MARKER` file listing what was written. An
    interrupted run leaves no partial output and any earlier complete ``out`` untouched: the
    renames run with SIGINT/SIGTERM held back, and a signal that arrives after them is raised
    with the output recorded in :data:`COMMITTED`.
    """
    real = resolve_out(out, inputs=inputs)
    parent = real.parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp = _fresh_dir(parent, "tmp")
    old, swapped = None, False
    try:
        with stop_on_signals():
            writer(tmp)
            files = sorted(p.name for p in tmp.iterdir())
            (tmp / MARKER).write_text(json.dumps({"written_by": "varcomp", "files": files})
                                      + "\n", encoding="utf-8")
            checkpoint()
            with _signals_held():
                if real.exists():
                    old = Path(tempfile.mkdtemp(dir=parent, prefix=".vc-old-"))
                    os.rmdir(old)
                    os.rename(real, old)
                os.rename(tmp, real)
                swapped = True
                COMMITTED.append(real)
                if old is not None:
                    shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        if not swapped:
            shutil.rmtree(tmp, ignore_errors=True)
            if old is not None and old.exists() and not real.exists():
                os.rename(old, real)
        raise
    return real


def write_file_atomically(out: Path, writer: Callable[[Path], None], *,
                          suffixes: Iterable[str]) -> Path:
    """Call ``writer(tmp_file)`` then rename the complete file into place as ``out``."""
    real = resolve_out_file(out, suffixes=suffixes)
    fd, name = tempfile.mkstemp(dir=real.parent, prefix=".vc-tmp-", suffix=real.suffix)
    os.close(fd)
    tmp = Path(name)
    try:
        with stop_on_signals():
            writer(tmp)
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
            checkpoint()
            with _signals_held():
                os.replace(tmp, real)
                COMMITTED.append(real)
    finally:
        tmp.unlink(missing_ok=True)
    return real


# ---------------------------------------------------------------------------- JSON
def _num(x) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def _json_default(o):
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return _num(o)
    if isinstance(o, np.bool_):
        return bool(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def _clean(o):
    """Replace non-finite floats by None so the JSON is standard."""
    if isinstance(o, dict):
        return {str(k): _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    if isinstance(o, (float, np.floating)):
        return _num(o)
    return o


def json_text(obj) -> str:
    """``obj`` as standard JSON text (NaN/inf as null, numpy scalars as numbers)."""
    return json.dumps(_clean(obj), indent=2, default=_json_default) + "\n"


def dump_json(obj, path: Path) -> None:
    """Write ``obj`` as standard JSON (:func:`json_text`)."""
    Path(path).write_text(json_text(obj), encoding="utf-8")
