"""The shared integer rule (``neurocompile.arith``) as numba-compilable functions, and the cache of
the compiled machine code.

numba compiles the ``arith`` functions themselves (registered here as jitable, with scalar versions
of the two helpers that dispatch on numpy/torch), so the emulator's compiled kernels
(``compiled_layer``, ``compiled_pointwise``) run the one written rule, never a restatement.
"""
from __future__ import annotations

import hashlib
import os
import tempfile

import numba
import numpy as np
from numba.extending import overload, register_jitable

from . import arith


@overload(arith._where)
def _where_scalar(cond, a, b):
    return lambda cond, a, b: a if cond else b


@overload(arith._clip)
def _clip_scalar(x, lo, hi):
    return lambda x, lo, hi: min(max(x, lo), hi)


for _rule in (arith._relu, arith.shift_round, arith.ssm_current, arith.lif_current, arith.lif_voltage_step,
              arith.lif_step, arith.gated_residual, arith._mul32, arith.hash32, arith.stream_key,
              arith.uniform_from_key, arith.uniform_bits,
              arith.channel_affine, arith.sample, arith.gelu, arith.gelu_residual, arith.readout_accumulate):
    register_jitable(_rule)

@register_jitable
def rounded_pair(y_hi, y_lo, b, h, i, split):
    """The exact integers behind FFT convolution results y_hi[b, h, i] (and y_lo when split), and the
    larger distance to them (the caller refuses > 0.25: the result would not be exact)."""
    yv = y_hi[b, h, i]
    hi = np.rint(yv)
    dev = abs(yv - hi)
    lo = 0.0
    if split:
        yv = y_lo[b, h, i]
        lo = np.rint(yv)
        dev = max(dev, abs(yv - lo))
    return np.int64(hi), np.int64(lo), dev


RULE_FILES = (arith.__file__, __file__)   # the rule with its constants, this registry


def machine_code_cache(kernel_file: str) -> str | None:
    """Where numba may keep a kernel module's machine code between runs (a few seconds of JIT per
    command): a folder named by the hash of the rule, its constants and the kernels' own source, so
    machine code can never outlive a change to the rule.  None (no caching) when it cannot be written."""
    digest = hashlib.sha256()
    for path in RULE_FILES + (kernel_file,):
        with open(path, "rb") as fh:
            digest.update(fh.read())
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    folder = os.path.join(base, "neurocompile", "numba", digest.hexdigest()[:16])
    try:
        os.makedirs(folder, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
    except OSError:
        return None
    return folder


def kernel(kernel_file: str, **options):
    """``numba.njit`` with ``nogil`` and the machine-code cache of ``kernel_file``.  numba reads
    CACHE_DIR when the decorator runs; it is restored right after so other numba users keep theirs."""
    folder = machine_code_cache(kernel_file)

    def decorate(fn):
        previous, numba.config.CACHE_DIR = numba.config.CACHE_DIR, folder or numba.config.CACHE_DIR
        try:
            return numba.njit(nogil=True, cache=folder is not None, **options)(fn)
        finally:
            numba.config.CACHE_DIR = previous
    return decorate
