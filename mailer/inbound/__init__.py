"""Receive: the SMTP listener, and the pipeline that handles each stored message once.

The listener stores and answers 250; the pipeline then runs the handler the
service registered for the message's kind (``handling``), such as the
acknowledgement of a reader's letter.
"""
