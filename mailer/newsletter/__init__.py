"""The newsletter: subscribers, mail commands, bounces, and the weekly digest."""
