"""What a pipeline handler is, and what it is given besides the database.

A handler takes the database, the stored message's row and a
``PipelineContext``, does what the message asks for inside the caller's
transaction, and returns the disposition kept with the message ("answered",
"not answered: automatic reply", ...). Handlers live with the stage they
serve (acknowledgements here in ``inbound``, subscribe and bounce handling
in ``newsletter``); the service registers them with the pipeline by kind.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

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


Handler = Callable[[sqlite_utils.Database, dict, PipelineContext], str]
