"""The thin client's poll and decision: everything get_hosts needs, and nothing else (see snmplb's map)."""
