"""The admin's tools on an application server: snmplb-admin and SNMPv3 user creation."""
