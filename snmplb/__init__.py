"""snmplb: SNMP-based login load balancing for LTSP thin clients."""

__version__ = "0.1.0"
