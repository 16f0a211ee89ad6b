"""Where a Dask computation runs: a cluster on this machine, or a running scheduler.

:func:`local_client` starts a ``distributed.LocalCluster``; :func:`client_for` connects to a
scheduler's address. Before a ``tcp://`` address is handed to ``distributed``, one plain socket
reads the peer's greeting within the timeout: a Dask scheduler speaks first on every new
connection (its handshake: an 8-byte length, then msgpack frames holding its Python version and
pickle protocol). A port where something else answers, or nothing does, is refused with one
line, instead of ``distributed`` taking the first 8 bytes of an HTTP reply as a frame length
("Unable to allocate 3.07 EiB") or waiting for a reply that never comes.
"""

from __future__ import annotations

import logging
import os
import socket
import struct
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from varcomp.models.errors import DataError

__all__ = ["CONNECT_TIMEOUT", "client_for", "local_client"]

CONNECT_TIMEOUT = 5.0
"""Seconds to reach a scheduler and read its greeting (a scheduler answers in milliseconds)."""

GREETING_BYTES = 1 << 16
"""A Dask handshake is about 60 bytes; a first frame longer than this is not one."""


@contextmanager
def local_client(
    n_workers: int | None = None,
    memory_limit: int | str | None = None,
    *,
    threads_per_worker: int = 1,
    processes: bool = True,
    dashboard: bool = False,
    memory_fraction: float = 0.8,
) -> Iterator[Any]:
    """Yield a ``distributed.Client`` on a ``LocalCluster``, both closed on exit.

    One worker per core (process-based by default), each limited to ``memory_fraction`` of
    physical memory divided by the number of workers. The dashboard is off unless
    ``dashboard=True`` (then on a free port, its link printed on stderr; it needs bokeh).
    While the block runs the client is the current one, so
    :func:`models.distributed.grouped_moments_dask` computes on it. The cluster's own log
    lines are silenced: a failed task (a bad file) reaches the caller as its one-line error,
    not as worker tracebacks on stderr.
    """
    from distributed import Client, LocalCluster

    workers = int(n_workers) if n_workers else _cores()
    if memory_limit is None:
        memory_limit = int(memory_fraction * _physical_memory() / workers)
    with LocalCluster(n_workers=workers, threads_per_worker=threads_per_worker,
                      processes=processes, memory_limit=memory_limit,
                      dashboard_address=":0" if dashboard else None,
                      # the scheduler's HTTP routes (metrics) on a free port, not 8787: a second
                      # cluster on the machine would warn that 8787 is taken
                      scheduler_kwargs={"dashboard_address": ":0"},
                      silence_logs=logging.CRITICAL) as cluster, Client(cluster) as client:
        if dashboard and client.dashboard_link:
            print(f"dask dashboard: {client.dashboard_link}", file=sys.stderr)
        yield client


def client_for(address: str, *, timeout: float | None = None):
    """Connect a ``distributed.Client`` to a running scheduler (e.g. ``tcp://host:8786``).

    Use it as a context manager (``with client_for(addr): ...``); the computation is the same as
    on :func:`local_client`'s cluster. An unreachable address, or one where no Dask scheduler
    answers within ``timeout`` seconds (default :data:`CONNECT_TIMEOUT`), is a one-line
    ``ValueError``.
    """
    from distributed import Client

    timeout = CONNECT_TIMEOUT if timeout is None else float(timeout)
    check_scheduler(address, timeout=timeout)
    try:
        return Client(address, timeout=timeout)
    except (OSError, TimeoutError, ValueError) as exc:
        raise DataError(f"cannot reach the Dask scheduler at {address}: "
                        f"{_first_line(exc)}") from None


def check_scheduler(address: str, *, timeout: float) -> None:
    """Refuse a ``tcp://`` address where no Dask scheduler greets within ``timeout`` seconds.

    Other transports (``tls://``, ``inproc://``, ...) are left to ``distributed``.
    """
    from distributed.comm.addressing import parse_address, parse_host_port

    try:
        scheme, location = parse_address(address)
        if scheme != "tcp":
            return
        host, port = parse_host_port(location, default_port=8786)
    except (ValueError, TypeError) as exc:
        raise DataError(f"--scheduler {address!r} is not an address like tcp://host:8786 "
                        f"({_first_line(exc)})") from None
    deadline = time.monotonic() + timeout
    try:
        with socket.create_connection((host, int(port)), timeout=timeout) as sock:
            head = _receive(sock, 8, deadline)
            (size,) = struct.unpack("<Q", head) if len(head) == 8 else (0,)
            body = _receive(sock, size, deadline) if 16 <= size <= GREETING_BYTES else b""
    except TimeoutError:
        raise DataError(f"no Dask scheduler answered at {address} within {timeout:g} s "
                        f"(something accepts connections there but says nothing): check the "
                        f"address and port") from None
    except OSError as exc:
        raise DataError(f"cannot reach the Dask scheduler at {address}: "
                        f"{_first_line(exc)}") from None
    if not _is_greeting(body):
        seen = (head + body)[:24]
        raise DataError(f"{address} does not speak Dask's protocol (it sent {seen!r}): give a "
                        f"Dask scheduler's address (`dask scheduler` prints it)")


def _receive(sock: socket.socket, size: int, deadline: float) -> bytes:
    """Up to ``size`` bytes, fewer if the peer closes; TimeoutError at ``deadline``."""
    data = b""
    while len(data) < size:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        sock.settimeout(left)
        chunk = sock.recv(size - len(data))
        if not chunk:
            break
        data += chunk
    return data


def _is_greeting(body: bytes) -> bool:
    """Whether ``body`` is Dask's handshake: frames whose first is a msgpack map naming Python."""
    import msgpack
    from distributed.protocol.utils import unpack_frames

    try:
        frames = unpack_frames(body)
        info = msgpack.loads(bytes(frames[0]))
    except Exception:  # any malformed bytes: not a greeting
        return False
    return isinstance(info, dict) and "python" in info and "pickle-protocol" in info


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


def _physical_memory() -> int:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 16 << 30
