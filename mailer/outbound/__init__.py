"""Send: composing messages from templates, the outbox, delivery, and DKIM signing."""
