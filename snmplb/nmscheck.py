"""Kept for check_snmplb wrappers installed before the layout by role: they run
``from snmplb.nmscheck import main``. The code is snmplb.nms.check."""
from snmplb.nms.check import main  # noqa: F401
