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
