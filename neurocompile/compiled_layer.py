"""One SpikingSSM layer (SSMConv -> LIF -> Dense -> GLUResidual) as a compiled CPU loop (numba), per sample.

This is the emulator's CPU fast path.  It does not restate the arithmetic: numba compiles the
``neurocompile.arith`` functions themselves (registered below as jitable, with scalar versions
of the two helpers that dispatch on numpy/torch), so the Lava process models, the torch path
and this loop all run the one written rule.

Why a compiled loop: after the FFT convolution, everything in a layer is a scan over time
(LIF) or cheap per-element work (current scaling, GLU, residual).  As torch ops each is a pass
over memory, and the LIF is a per-step Python loop; here one pass over each sample does all of
it with the state in L1, and the Dense layer is what the chip does -- for each neuron that
spiked, its weight row is added (accumulate-only, no GEMM, cost proportional to spikes).
"""
from __future__ import annotations

import hashlib
import os
import tempfile

import numba
import numpy as np
from numba.extending import overload, register_jitable

from . import arith
from .targets.loihi2 import target as _target_facts


@overload(arith._where)
def _where_scalar(cond, a, b):
    return lambda cond, a, b: a if cond else b


@overload(arith._clip)
def _clip_scalar(x, lo, hi):
    return lambda x, lo, hi: min(max(x, lo), hi)


for _rule in (arith._relu, arith.shift_round, arith.ssm_current, arith.lif_current, arith.lif_voltage_step,
              arith.lif_step, arith.gated_residual):
    register_jitable(_rule)

# the rule, as the compiled loop calls it (numba resolves these to the registered functions)
_ssm_current = arith.ssm_current
_lif_step = arith.lif_step
_gated_residual = arith.gated_residual


TIME_BLOCK = 32     # steps per block: every row is read and written in runs of 32 (full cache lines)


RULE_FILES = (arith.__file__, _target_facts.__file__, __file__)   # the rule, its constants, this loop


def machine_code_cache() -> str | None:
    """Where numba may keep the compiled loop between runs (it saves a few seconds of JIT per
    command): a folder named by the hash of this file, ``arith.py`` and the target facts it reads, so machine code can
    never outlive a change to the rule.  None (no caching) when the folder cannot be written."""
    digest = hashlib.sha256()
    for path in RULE_FILES:
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


# numba reads CACHE_DIR once, when the decorator below runs; it is restored right after so other
# numba users in the process keep their own setting.
_CACHE = machine_code_cache()
_previous_cache_dir, numba.config.CACHE_DIR = numba.config.CACHE_DIR, _CACHE or numba.config.CACHE_DIR


@numba.njit(nogil=True, cache=_CACHE is not None)     # nogil: the emulator runs samples on parallel threads
def run_layer(x, y_hi, y_lo, split, lag, shift, conv_bias, dv, vth, weight_rows, bias, value_shift, gate_shift,
              out_shift, lut, x_next, record, rec_a, rec_s, rec_v, rec_d, worst):  # pragma: no cover (compiled)
    """x (B, H, L) int64 stream in; y_hi / y_lo (B, H, >= L + lag) float64 causal FFT convolutions
    of the high and low stream parts (y_lo unused when ``split`` is 0), read ``lag`` steps late;
    conv_bias (H, L) or (H, 0) the SSM's per-step bias; weight_rows (H, 2H) the Dense weights by
    presynaptic neuron.  Writes x_next (B, H, L); with ``record`` the SSM output current, spikes,
    voltage after reset and Dense output into rec_* (B, ., L); worst[b] = largest distance of a
    convolution result to its integer (the caller checks it).

    Rows of (B, H, L) arrays lie 2**k bytes apart, so walking h at fixed t would thrash the
    caches; each block of TIME_BLOCK steps is walked row by row instead (LIF, then the Dense
    accumulation per step, then the GLU), which is the same arithmetic in the same causal order.
    """
    B, H, L = x.shape
    H2 = weight_rows.shape[1]
    has_bias = conv_bias.shape[1] > 0
    for b in range(B):
        v = np.zeros(H, np.int64)
        spikes = np.zeros((TIME_BLOCK, H), np.bool_)
        acc = np.empty((TIME_BLOCK, H2), weight_rows.dtype)
        dev = 0.0
        for t0 in range(0, L, TIME_BLOCK):
            steps = min(TIME_BLOCK, L - t0)
            for h in range(H):                          # current scaling and the LIF scan
                vh = v[h]
                for k in range(steps):
                    y = y_hi[b, h, lag + t0 + k]
                    hi = np.rint(y)
                    dev = max(dev, abs(y - hi))
                    lo = 0.0
                    if split:
                        y = y_lo[b, h, lag + t0 + k]
                        lo = np.rint(y)
                        dev = max(dev, abs(y - lo))
                    bh = conv_bias[h, t0 + k] if has_bias else 0
                    a = _ssm_current(np.int64(hi), np.int64(lo), split, shift[h], bh)
                    vh, s = _lif_step(vh, a, dv, vth)
                    spikes[k, h] = s
                    if record:
                        rec_a[b, h, t0 + k] = a
                        rec_s[b, h, t0 + k] = s
                        rec_v[b, h, t0 + k] = vh
                v[h] = vh
            for k in range(steps):                      # Dense: add the weight row of each spike
                acc[k, :] = bias
                for h in range(H):
                    if spikes[k, h]:
                        for j in range(H2):
                            acc[k, j] += weight_rows[h, j]
                if record:
                    for j in range(H2):
                        rec_d[b, j, t0 + k] = acc[k, j] - bias[j]
            for h in range(H):                          # GLU and the residual add
                for k in range(steps):
                    x_next[b, h, t0 + k] = _gated_residual(x[b, h, t0 + k], acc[k, h], acc[k, H + h], value_shift[h],
                                                           gate_shift[h], out_shift[h], lut)
        worst[b] = dev


numba.config.CACHE_DIR = _previous_cache_dir
