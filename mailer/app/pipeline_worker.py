"""The pipeline worker process: ``python -m mailer.app.pipeline_worker``, started by ``mailer serve``.

It runs the very ``Pipeline`` the service would run in-process, with the
same handlers, on a DatabaseWriter of its own over the same archive (WAL;
each write transaction is ``BEGIN IMMEDIATE`` with SQLite's busy timeout,
so the listener's commits and the worker's take turns). What it is told and
what it answers is described in ``app.pipeline_process``.

Only one worker runs on an archive: it holds an exclusive lock on a file
beside the database (``<database>.pipeline-lock``) while it works, and a
second one waits for it. The lock goes with the process, so a worker that
was killed never leaves it behind.
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import logging
import mmap
import os
import pickle
import signal
import struct
import sys

from mailer import logs
from mailer.app.pipeline_process import ACKNOWLEDGED, READY, lock_path
from mailer.app.service import message_handlers, message_preparers, sender_check
from mailer.clock import system_clock
from mailer.config import Config
from mailer.inbound.handling import PipelineContext
from mailer.inbound.pipeline import Pipeline
from mailer.outbound.templating import template_environment
from mailer.store.writer import DatabaseWriter

log = logging.getLogger("mailer.pipeline_worker")

#: How much lower than the listener the worker runs (os.nice): a sender
#: waiting for its 250 comes before an acknowledgement.
NICENESS = 10

#: How often a worker waiting for another one's lock looks again.
LOCK_POLL_SECONDS = 0.1


def read_config(fd: int) -> Config:
    """The Config the service wrote on our stdin: its length (4 bytes), then the pickle."""
    size = struct.unpack(">I", _read_exactly(fd, 4))[0]
    config = pickle.loads(_read_exactly(fd, size))
    if not isinstance(config, Config):
        raise TypeError(f"expected a Config on stdin, got {type(config).__name__}")
    return config


def _read_exactly(fd: int, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = os.read(fd, size - len(data))
        if not chunk:
            raise EOFError("the service closed the pipe before sending the configuration")
        data += chunk
    return data


class Worker:
    """One worker's life: wait for the lock, run the pipeline until told to stop, stop it."""

    def __init__(self, config: Config, busy: mmap.mmap, notify_fd: int) -> None:
        self.config = config
        self.busy = busy
        self.notify_fd = notify_fd
        self.stop_requested = asyncio.Event()

    def tell(self, what: bytes) -> None:
        """Write one byte to the service; a service that is gone means stop."""
        try:
            os.write(self.notify_fd, what)
        except (BrokenPipeError, OSError):
            self.stop_requested.set()

    async def run(self) -> int:
        """Serve until SIGTERM, SIGINT or the end of stdin; return the exit status."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop_requested.set)
        if _stopped_early:
            self.stop_requested.set()
        pipeline: Pipeline | None = None
        stdin = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin),
                                     os.fdopen(0, "rb", buffering=0, closefd=False))
        listen = asyncio.create_task(self._listen(stdin, lambda: pipeline))
        lock = await self._take_lock()
        if lock is None:
            listen.cancel()
            return 0
        writer = DatabaseWriter(self.config.storage.database)
        try:
            writer.start()
            pipeline = Pipeline(
                writer,
                PipelineContext(config=self.config, templates=template_environment(self.config.templates_override()),
                                clock=system_clock),
                handlers=message_handlers(),
                preparers=message_preparers(),
                on_processed=lambda: self.tell(ACKNOWLEDGED),
                sender_check=sender_check(self.config),
            )
            pipeline.listener_busy = lambda: self.busy[0] != 0
            await pipeline.start()
            self.tell(READY)
            log.info("pipeline worker ready (pid %d, nice %d)", os.getpid(), os.nice(0),
                     extra={"event": "pipeline_worker_ready", "pid": os.getpid()})
            await self.stop_requested.wait()
            # Finish the batch in hand and file what was received, as the in-process pipeline does.
            await pipeline.stop()
        finally:
            listen.cancel()
            await loop.run_in_executor(None, writer.stop)
            lock.close()
        return 0

    async def _listen(self, stdin: asyncio.StreamReader, pipeline) -> None:
        # Any bytes: letters arrived. End of file: the service is gone.
        while True:
            chunk = await stdin.read(4096)
            if not chunk:
                self.stop_requested.set()
                return
            if pipeline() is not None:
                pipeline().message_stored(None)

    async def _take_lock(self):
        """The exclusive lock beside the database, or None when told to stop while waiting."""
        path = lock_path(self.config.storage.database)
        handle = open(path, "a+b")
        said = False
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return handle
            except BlockingIOError:
                if not said:
                    log.warning("another pipeline worker is running on %s; waiting for it to finish",
                                self.config.storage.database, extra={"event": "pipeline_worker_waiting"})
                    said = True
            try:
                await asyncio.wait_for(self.stop_requested.wait(), LOCK_POLL_SECONDS)
            except asyncio.TimeoutError:
                continue
            handle.close()
            return None


_stopped_early = False


def _stop_early(signum, frame) -> None:
    global _stopped_early
    _stopped_early = True


def main(argv: list[str] | None = None) -> int:
    """Read the configuration from stdin, then file and answer letters until stopped."""
    parser = argparse.ArgumentParser(prog="python -m mailer.app.pipeline_worker")
    parser.add_argument("--busy-fd", type=int, required=True,
                        help="A shared-memory file whose first byte is 1 while the listener has senders.")
    parser.add_argument("--verbose", action="store_true", help="Debug lines too (the service runs with -v).")
    args = parser.parse_args(argv)
    # A SIGTERM before the event loop takes it over is kept for it: the
    # worker still files what was received before it exits.
    signal.signal(signal.SIGTERM, _stop_early)
    # Our stdout is the channel to the service: keep it, and send anything
    # else that would print there to stderr instead.
    notify_fd = os.dup(1)
    os.dup2(2, 1)
    config = read_config(0)
    logs.setup(config.logging.format, config.logging.level, verbose=args.verbose)
    os.nice(NICENESS)
    busy = mmap.mmap(args.busy_fd, mmap.PAGESIZE, prot=mmap.PROT_READ)
    return asyncio.run(Worker(config, busy, notify_fd).run())


if __name__ == "__main__":
    sys.exit(main())
