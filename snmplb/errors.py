"""The one error family of snmplb.

Only the command-line edges turn these into messages and exit codes.
"""


class SnmplbError(Exception):
    """An snmplb operation failed."""


class ConfigError(SnmplbError):
    """A configuration value is invalid; the message names the setting."""


class MibError(SnmplbError):
    """The MIB could not be compiled or does not match the generated data."""


class FleetError(SnmplbError):
    """A local snmpd instance could not be started or did not answer."""


class QueueError(SnmplbError):
    """A POSIX message queue call failed (the message names the call and the system's reason)."""

    def __init__(self, call: str, err: int) -> None:
        import os

        super().__init__(f"{call}: {os.strerror(err)}")
        self.errno = err


class TrustError(SnmplbError):
    """A queue, file or directory is not what its reader or writer may trust: another user owns it, others may
    write it, or it is a symbolic link (the message names it, its owner and its mode)."""
