"""Loihi 2 target: lowering of a Program to Lava processes and its runtime.

Lava (lava-nc 0.10) is the optional 'lava' extra: it imports on Python 3.10 only and Intel archived
it in May 2026.  Only ``lowering`` and ``runner`` import it, through ``require_lava`` first, so a
missing Lava is one line naming the extra, and everything else here runs without it."""
from __future__ import annotations

from ...errors import LavaRunError

import sys

LAVA_EXTRA = ("Lava runs need the 'lava' extra: pip install 'neurocompile[lava]' "
              "(Python 3.10 only; lava-nc 0.10, archived by Intel in May 2026)")
LAVA_PYTHON = (3, 10)           # the extra's markers install lava-nc on this Python only


def _other_python() -> str:
    """On a Python other than 3.10, what the extra does there (its markers install nothing of Lava)."""
    here = sys.version_info[:2]
    return "" if here == LAVA_PYTHON else f"; on this Python {here[0]}.{here[1]} the extra installs nothing of Lava"


def lava_missing() -> str | None:
    """Why Lava cannot be imported here, or None when it can."""
    try:
        import lava.magma.core.run_configs  # noqa: F401
    except ImportError as exc:
        return str(exc) or type(exc).__name__
    return None


def lava_unavailable() -> str | None:
    """Why Lava cannot run here, in words for a user (``Target.runner_unavailable``), or None when it can."""
    if lava_missing() is None:
        return None
    here = sys.version_info[:2]
    if here != LAVA_PYTHON:
        return f"Lava is not installed; it needs Python 3.10 and the 'lava' extra, and this is Python {here[0]}.{here[1]}"
    return "Lava is not installed; it needs Python 3.10 and the 'lava' extra"


def require_lava() -> None:
    """Raise ``LavaRunError("Lava runs need the 'lava' extra ...")`` when Lava is missing (the core,
    which loads the runner through the target, prefixes what was asked for: ``api.lava_runner``)."""
    if lava_missing() is not None:
        raise LavaRunError(LAVA_EXTRA[:-1] + _other_python() + ")")
