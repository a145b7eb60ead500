"""What a pipeline handler is, and what it is given besides the database.

A handler takes the database, the stored message's row and a
``PipelineContext``, does what the message asks for inside the caller's
transaction, and returns the disposition kept with the message ("answered",
"not answered: automatic reply", ...). Handlers live with the stage they
serve (acknowledgements here in ``inbound``, subscribe and bounce handling
in ``newsletter``); the service registers them with the pipeline by kind.

A handler whose work is mostly computation (reading a letter, picking its
topics, rendering and building the answer) may also have a *preparer*: it
is given a read connection and the same row, runs before and outside the
write transaction, and what it returns is handed to the handler as a fourth
argument, ``prepared``. Every other process's writes (the listener's
letters above all) wait for a write transaction, never for a preparation.
The handler still decides in its transaction whatever depends on the
archive's state (limits, what was already sent), and computes the
preparation itself when it is given none.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import jinja2
import sqlite_utils

from mailer.clock import Clock
from mailer.config import Config


@dataclass
class PipelineContext:
    """What handlers need besides the database: config, templates and the clock."""

    config: Config
    templates: jinja2.Environment
    clock: Clock


#: ``handler(db, row, ctx)``, or ``handler(db, row, ctx, prepared)`` when the
#: kind has a preparer and the preparation succeeded.
Handler = Callable[..., str]

#: ``preparer(read_db, row, ctx)``: the handler's computation that needs no
#: write, done before its transaction (see the module docstring).
Preparer = Callable[[sqlite_utils.Database, dict, PipelineContext], Any]
