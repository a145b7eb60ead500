"""mailer: the mail desk of a self-therapy column.

Data flows one way: listener -> archive -> policy -> outbox -> delivery.
"""

__version__ = "0.1.0"
