"""The monitoring server's side: check_snmplb for Nagios, Icinga and their kin."""
