"""Generators run at build time or by an admin: the MIB's Python data and every file under nms/. In no Debian package."""
