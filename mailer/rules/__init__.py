"""Decide: the judgements made about a letter (is it a robot? is the reader in crisis?).

Rules read a parsed letter and return a verdict with its reasons; they send
nothing and store nothing.
"""
