"""Exceptions raised by the store; the service maps them to error numbers."""


class StoreError(Exception):
    """Base class of every error the store raises on purpose."""


class StoreUnavailable(StoreError):
    """The database cannot be reached or failed; the service answers errno 9.

    The message carries the driver's reason.  The connection that failed has
    already been discarded, so the next call starts on a fresh one.
    """


class NameTaken(StoreError):
    """register(): a user with this name exists already."""


class GroupNameTaken(StoreError):
    """create_group(): a group with this name exists already."""


class UnknownSchema(StoreError):
    """The database holds tables this code does not recognise, or a newer schema.

    Raised before anything was changed; the message is one line that says
    what was found.  The entry points print it and exit with status 2.
    """
