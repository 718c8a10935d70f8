"""The application server's side: the pass_persist agent behind snmpd, and the HAProxy agent-check."""
