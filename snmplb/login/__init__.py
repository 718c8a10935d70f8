"""Thin-client ways to log in beyond get_hosts: snmplb pick/connect/feed/status, the chooser, ssh host keys."""
