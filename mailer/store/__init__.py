"""Keep: the archive in SQLite, its schema, the one writer thread, and parsing raw mail.

The bottom of the flow: everything above reads and writes mail through here,
and nothing here imports a stage above it.
"""
