"""Run the service on a background thread: for the demo, benchmarks and tests.

``mailer serve`` owns the main thread and its signals; everything else that
needs a live service in-process (the newcomer's demo, the test suite) uses
:class:`BackgroundService`, which runs the very same :class:`Service` on its
own event loop and hands back the ports it actually bound.
"""

from __future__ import annotations

import asyncio
import threading

from mailer.app.service import Service
from mailer.clock import Clock, system_clock
from mailer.config import Config


class BackgroundService:
    """Start a Service on a private thread; stop it cleanly on exit."""

    def __init__(self, config: Config, *, clock: Clock = system_clock, start_timeout: float = 30.0) -> None:
        self.config = config
        self.clock = clock
        self.start_timeout = start_timeout
        self.service: Service | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None

    def __enter__(self) -> "BackgroundService":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def smtp_port(self) -> int:
        """The port the SMTP listener bound."""
        assert self.service is not None
        return self.service.smtp_address[1]

    def start(self) -> None:
        """Start the service and wait until it listens (or raise why it could not)."""
        self._thread = threading.Thread(target=self._run, name="mailer-service", daemon=True)
        self._thread.start()
        if not self._started.wait(self.start_timeout):
            raise TimeoutError("the service did not start in time")
        if self._error is not None:
            raise self._error

    def call(self, coro_fn, *args, timeout: float = 30.0):
        """Run ``coro_fn(*args)`` on the service's loop and return its result."""
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro_fn(*args), self._loop).result(timeout)

    def stop(self, timeout: float = 60.0) -> None:
        """Stop the service gracefully and wait for its thread."""
        if self._loop is None or self._thread is None:
            return
        if self.service is not None and self._error is None:
            asyncio.run_coroutine_threadsafe(self.service.stop(), self._loop).result(timeout)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout)
        self._thread = None

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)
        self.service = Service(self.config, clock=self.clock)
        try:
            self._loop.run_until_complete(self.service.start())
        except BaseException as exc:  # noqa: BLE001 - reported to the starting thread
            self._error = exc
            self._started.set()
            self._loop.close()
            return
        self._started.set()
        try:
            self._loop.run_forever()
        finally:
            self._loop.close()
