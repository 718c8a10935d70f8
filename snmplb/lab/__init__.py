"""Development only: a fleet of real snmpd agents on loopback, and the demo. In no Debian package."""
