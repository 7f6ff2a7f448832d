"""Lava tests carry the ``lava`` marker.  On Python 3.10 (where the 'lava' extra installs) every one
of them must run: a missing Lava there is an error, never a silent skip.  On current Python the
suite runs with ``-m 'not lava'``; selecting a Lava test without Lava is an error too."""
import sys

import pytest

from neurocompile.targets.loihi2 import lava_missing

LAVA_PYTHON = (3, 10)


@pytest.hookimpl(trylast=True)            # after -m has deselected
def pytest_collection_modifyitems(config, items):
    missing = lava_missing()
    if missing is None:
        return
    if sys.version_info[:2] == LAVA_PYTHON:
        raise pytest.UsageError(f"Lava does not import on Python 3.10 ({missing}): install the 'lava' extra "
                                "(pip install -e '.[lava,test]'); the 3.10 suite runs every Lava test")
    lava = [item.nodeid for item in items if item.get_closest_marker("lava")]
    if lava:
        raise pytest.UsageError(f"{len(lava)} selected tests need Lava (e.g. {lava[0]}), which does not import here "
                                f"({missing}): deselect them with -m 'not lava' or use Python 3.10 with the 'lava' extra")
