"""The service as a whole: ``mailer serve``, its background runner, the demo and status facts."""
