"""Errors meant for users: one clear paragraph (what is wrong, what to do), printed by the CLI without a
traceback, exit status 2. Anything else that escapes is a bug and keeps its traceback."""


class UserError(Exception):
    """Bad input or a request that cannot be met; the message says what is wrong and what to do."""
