"""The service's side of the pipeline worker process: start it, feed it, watch it.

The listener keeps a letter's bytes and answers 250; filing and answering
the letter (``inbound.pipeline.Pipeline``) can run in a process of its own
(``app.pipeline_worker``), so it has its own interpreter lock, can use
another core, and runs at a lower priority than the listener.
:class:`PipelineProcess` has the same hooks as ``Pipeline`` (``start``,
``stop``, ``message_stored``, ``listener_busy``), so the service wires
either one.

What goes between the two processes, and why each is cheap:

* the child's stdin: the service's Config once (pickled, length first),
  then one byte whenever letters arrived (coalesced: one per turn of the
  event loop however many letters came). End of file means stop: the
  service is stopping, or it is gone (even after kill -9); the worker
  finishes its batch, files what was received and exits. SIGTERM does the
  same (an operator's, or systemd's to the whole group);
* the child's stdout: ``R`` when the worker is ready, ``A`` whenever it
  queued acknowledgements (the outbox worker stays in the service and is
  woken by it);
* one shared byte (an anonymous memory file both map): 1 while the
  listener has senders connected. The worker reads it between letters and
  while waiting for a quiet moment (every 5 ms); the service writes it when a
  session opens or closes, with no system call.

The worker's logs go to the service's stderr; it never logs a letter's content.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import mmap
import os
import pickle
import struct
import sys
import tempfile
from pathlib import Path
from typing import Callable

from mailer.config import Config

log = logging.getLogger("mailer.pipeline_process")

#: How long a stopping worker may take to finish its batch and file what was received.
STOP_SECONDS = 30.0

#: The wait before restarting a worker that died: doubled after each death
#: in a row, up to the most; back to the least once a worker ran a while.
RESTART_LEAST_SECONDS = 0.5
RESTART_MOST_SECONDS = 30.0
#: A worker that ran this long before it died is restarted after the least wait.
STEADY_SECONDS = 60.0

#: Bytes from the worker on its stdout.
READY = b"R"
ACKNOWLEDGED = b"A"


def lock_path(database: Path) -> Path:
    """The file whose lock says a pipeline worker is working on ``database``."""
    return database.with_name(database.name + ".pipeline-lock")


def worker_running(database: Path) -> bool:
    """Whether a pipeline worker holds ``database``'s lock now (for ``mailer status``).

    It only looks: a missing lock file means no worker ever ran, and is not
    created. Holding the lock for the look makes a starting worker wait a
    moment, no more.
    """
    try:
        handle = open(lock_path(database), "rb")
    except FileNotFoundError:
        return False
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False


class PipelineProcess:
    """Service component: the pipeline in a worker process, restarted when it dies."""

    def __init__(self, config: Config, *, on_processed: Callable[[], None] | None = None,
                 stop_seconds: float = STOP_SECONDS) -> None:
        self.config = config
        self.on_processed = on_processed
        self.stop_seconds = stop_seconds
        #: Set by the service: whether the listener has senders connected now.
        self.listener_busy: Callable[[], bool] = lambda: False
        #: How many times a worker died and was started again (for status and tests).
        self.restarts = 0
        #: Set each time a worker said it is ready to file and answer letters.
        self.ready = asyncio.Event()
        self._proc: asyncio.subprocess.Process | None = None
        self._supervisor: asyncio.Task | None = None
        self._reader: asyncio.Task | None = None
        self._stopping = asyncio.Event()
        self._wake_pending = False
        self._flag_file = None
        self._flag: mmap.mmap | None = None

    @property
    def pid(self) -> int | None:
        """The running worker's process id, or None between workers."""
        proc = self._proc
        return proc.pid if proc is not None and proc.returncode is None else None

    async def start(self) -> None:
        """Start the worker (the archive is migrated by now) and watch it."""
        # memfd: shared memory with no name to clean up after a kill -9.
        fd = os.memfd_create("mailer-listener-busy") if hasattr(os, "memfd_create") else None
        self._flag_file = os.fdopen(fd, "r+b", buffering=0) if fd is not None else tempfile.TemporaryFile()
        self._flag_file.truncate(mmap.PAGESIZE)
        self._flag = mmap.mmap(self._flag_file.fileno(), mmap.PAGESIZE)
        await self._spawn()
        self._supervisor = asyncio.create_task(self._supervise(), name="pipeline-process")

    def message_stored(self, stored) -> None:
        """Service hook: a letter's bytes were kept; tell the worker (once per loop turn)."""
        if not self._wake_pending:
            self._wake_pending = True
            asyncio.get_running_loop().call_soon(self._send_wake)

    def listener_changed(self) -> None:
        """Service hook: a session opened or closed; publish ``listener_busy()`` to the worker."""
        if self._flag is not None:
            self._flag[0] = 1 if self.listener_busy() else 0

    async def stop(self) -> None:
        """Ask the worker to finish its batch and file what was received; kill it after a timeout."""
        self._stopping.set()
        proc = self._proc
        if proc is not None and proc.returncode is None:
            # The end of its stdin is the request (as when the service dies):
            # unlike a signal, it cannot come too early, while the worker is
            # still starting, and be lost.
            if proc.stdin is not None:
                proc.stdin.close()
            try:
                code = await asyncio.wait_for(proc.wait(), self.stop_seconds)
            except asyncio.TimeoutError:
                log.error("the pipeline worker (pid %d) did not stop within %.0f s: killed; what it had "
                          "not finished is done at the next start", proc.pid, self.stop_seconds,
                          extra={"event": "pipeline_worker_killed", "pid": proc.pid})
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                code = await proc.wait()
            log.info("pipeline worker (pid %d) stopped with status %s", proc.pid, code,
                     extra={"event": "pipeline_worker_stopped", "pid": proc.pid, "status": code})
        if self._supervisor is not None:
            await self._supervisor
        if self._reader is not None:
            await self._reader
        self._close_flag()

    # -- the worker's life ---------------------------------------------------------------
    async def _spawn(self) -> None:
        assert self._flag_file is not None
        fd = self._flag_file.fileno()
        # The child's stderr is ours: its log lines go where the service's go.
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "mailer.app.pipeline_worker", "--busy-fd", str(fd),
            *(["--verbose"] if logging.getLogger().isEnabledFor(logging.DEBUG) else []),  # mailer -v
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, pass_fds=(fd,),
        )
        config = pickle.dumps(self.config, protocol=pickle.HIGHEST_PROTOCOL)
        assert self._proc.stdin is not None
        self._proc.stdin.write(struct.pack(">I", len(config)) + config)
        self.listener_changed()
        self._reader = asyncio.create_task(self._read_worker(self._proc), name="pipeline-process-reader")
        log.info("pipeline worker started (pid %d)", self._proc.pid,
                 extra={"event": "pipeline_worker_started", "pid": self._proc.pid})

    async def _supervise(self) -> None:
        loop = asyncio.get_running_loop()
        wait = RESTART_LEAST_SECONDS
        while True:
            proc = self._proc
            assert proc is not None
            began = loop.time()
            code = await proc.wait()
            if self._reader is not None:
                await self._reader
            if self._stopping.is_set():
                return
            if loop.time() - began >= STEADY_SECONDS:
                wait = RESTART_LEAST_SECONDS
            self.ready.clear()
            log.error("the pipeline worker (pid %d) exited with status %s; restarting it in %.1f s",
                      proc.pid, code, wait,
                      extra={"event": "pipeline_worker_died", "pid": proc.pid, "status": code,
                             "restart_in": wait})
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), wait)
            if self._stopping.is_set():
                return
            wait = min(wait * 2, RESTART_MOST_SECONDS)
            try:
                await self._spawn()
            except OSError:
                log.exception("cannot start the pipeline worker; trying again")
                continue
            self.restarts += 1
            if self._stopping.is_set() and self._proc.stdin is not None:
                # stop() came while this one was being started, and did not
                # see it: ask it to stop too, and wait for it in the loop.
                self._proc.stdin.close()

    async def _read_worker(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        while True:
            chunk = await proc.stdout.read(256)
            if not chunk:
                return
            if READY in chunk:
                self.ready.set()
            if ACKNOWLEDGED in chunk and self.on_processed is not None:
                self.on_processed()

    def _send_wake(self) -> None:
        self._wake_pending = False
        proc = self._proc
        if proc is None or proc.returncode is not None or proc.stdin is None:
            return  # a worker starting next files whatever arrived meanwhile
        try:
            proc.stdin.write(b"\1")
        except (BrokenPipeError, ConnectionResetError, RuntimeError):
            pass  # it is dying: the supervisor restarts it, and a new worker looks for arrivals

    def _close_flag(self) -> None:
        if self._flag is not None:
            self._flag.close()
            self._flag = None
        if self._flag_file is not None:
            self._flag_file.close()
            self._flag_file = None
