"""Kept for get_hosts wrappers installed before the layout by role: they run
``from snmplb.gethosts import main_and_exit``. The code is snmplb.client.gethosts."""
from snmplb.client.gethosts import main, main_and_exit  # noqa: F401
