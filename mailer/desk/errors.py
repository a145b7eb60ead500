"""What the desk cannot do, one class per kind a caller can act on."""

from __future__ import annotations


class DeskError(Exception):
    """Something the desk cannot do; the message tells the columnist why."""


class ThreadNotFound(DeskError):
    """No thread with that id (it may have been forgotten)."""

    def __init__(self, thread_id: int) -> None:
        super().__init__(f"no thread with id {thread_id}")
        self.thread_id = thread_id


class NothingToAnswer(DeskError):
    """The thread holds no letter from a reader that a reply could answer."""


class EmptyReply(DeskError):
    """The columnist's reply has no text."""
