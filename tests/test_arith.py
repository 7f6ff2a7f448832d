"""The shared integer rule: numpy and torch agree, and each function equals its definition."""
import numpy as np
import pytest
import torch

from neurocompile import arith
from neurocompile.emulator import fft_error_bound, lif_scan, streamed_conv_exact

rng = np.random.default_rng(1234)


def test_shift_round_is_round_half_up_and_exact_left_shift():
    v = rng.integers(-10**6, 10**6, size=4000)
    k = rng.integers(-5, 12, size=4000)
    got = arith.shift_round(v, k)
    # round half up == floor((2v + 2**k) / 2**(k+1)), exact in Python integers
    want = [(2 * int(a) + 2 ** int(b)) // 2 ** (int(b) + 1) if b > 0 else int(a) * 2 ** (-int(b)) for a, b in zip(v, k)]
    assert got.tolist() == want
    assert torch.equal(arith.shift_round(torch.as_tensor(v), torch.as_tensor(k)), torch.as_tensor(got))


def _lava_lif_reference(v, a_in, dv, vth):
    """Lava 0.10 PyLifModelBitAcc.subthr_dynamics + spiking, transcribed for du=4095 (u decays to 0)."""
    max_uv = 2 ** 23
    decayed_curr = np.int64(0)
    cur = decayed_curr + (a_in.astype(np.int64) << 6)
    cur = np.where(cur > max_uv, cur - 2 * max_uv, cur)
    cur = np.where(cur <= -max_uv, cur + 2 * max_uv, cur)
    dvolt = v.astype(np.int64) * (4096 - dv)
    dvolt = np.sign(dvolt) * np.right_shift(np.abs(dvolt), 12)
    v = np.clip(dvolt + cur, -max_uv + 1, max_uv - 1)
    s = v > (vth << 6)
    v[s] = 0
    return v, s


@pytest.mark.parametrize("dv,vth", [(3584, 256), (0, 1000), (4095, 7), (2048, 65536)])
def test_lif_step_matches_lava_arithmetic_in_numpy_and_torch(dv, vth):
    v_np = np.zeros(500, dtype=np.int64)
    v_t = torch.zeros(500, dtype=torch.int64)
    v_ref = v_np.copy()
    for _ in range(60):
        a = rng.integers(-3 * vth, 3 * vth + 2, size=500)
        a[:5] = [vth, vth + 1, 2 ** 17 + 5, -(2 ** 17) - 5, 0]          # threshold edge and wrap cases
        v_ref, s_ref = _lava_lif_reference(v_ref, a, dv, vth)
        v_np, s_np = arith.lif_step(v_np, a, dv, vth)
        v_t, s_t = arith.lif_step(v_t, torch.as_tensor(a), dv, vth)
        assert np.array_equal(v_np, v_ref) and np.array_equal(s_np, s_ref)
        assert np.array_equal(v_t.numpy(), v_ref) and np.array_equal(s_t.numpy(), s_ref)


def test_bit_serial_conv_equals_integer_dot_and_fft_emulator():
    H, L, T = 6, 40, 55
    kernel = rng.integers(-127, 128, size=(H, L))
    x = rng.integers(-2000, 2000, size=(T, H))
    # direct causal convolution
    direct = np.zeros((T, H), dtype=np.int64)
    for t in range(T):
        for l in range(min(L, t + 1)):
            direct[t] += kernel[:, l] * x[t - l]
    bit_serial = np.zeros_like(direct)
    hist = np.zeros((L, H), dtype=np.int64)
    for t in range(T):
        hist = np.roll(hist, 1, axis=0)
        hist[0] = x[t]
        hi, lo = arith.conv_taps_bit_serial(hist, kernel, n_bits=12)
        assert not lo.any()
        bit_serial[t] = hi
        for split in (1, 4, 11):          # two accumulators: hi * 2**split + lo is the same sum
            hi, lo = arith.conv_taps_bit_serial(hist, kernel, n_bits=12, split=split)
            x_hi, x_lo = arith.split_stream(hist, split)
            assert np.array_equal(hi, (kernel.T * x_hi).sum(0)) and np.array_equal(lo, (kernel.T * x_lo).sum(0))
            assert np.array_equal(hi * 2 ** split + lo, bit_serial[t])
    assert np.array_equal(bit_serial, direct)
    fft = streamed_conv_exact(torch.as_tensor(x.T[None]), kernel, 0)[0].numpy()     # (1, H, T) time-last
    assert np.array_equal(fft.T, direct)
    # read lag steps late: the causal result at t + lag (what a two-sided kernel streams)
    late = streamed_conv_exact(torch.as_tensor(x.T[None]), kernel, 7)[0].numpy().T
    assert np.array_equal(late[:T - 7], direct[7:])
    # the a-priori FFT error bound the emulator relies on is below 0.25 for L = 1024, causal
    # (n = 2048, 1024 taps) and two-sided (n = 4096, 2047 taps), 8-bit taps, 16-bit streams
    assert fft_error_bound(2048, 1024, 127, 16) < 0.25 and fft_error_bound(4096, 2047, 127, 16) < 0.25


def test_encode_is_shift_add_of_the_product():
    w = rng.integers(-500, 500, size=(7, 2))
    b = rng.integers(-100, 100, size=7)
    levels = rng.integers(0, 256, size=(3, 11, 2))
    shift = rng.integers(-2, 9, size=7)
    got = arith.encode_bit_serial(levels, w, b, shift, n_bits=8)
    exact = (levels @ w.T + b) * 2.0 ** -shift                       # the shift rounds half up
    assert np.array_equal(got, np.floor(exact + 0.5).astype(np.int64))
    assert np.array_equal(arith.encode(levels, w, b, shift), got)
    tt = torch.as_tensor
    assert np.array_equal(arith.encode_bit_serial(tt(levels), tt(w), tt(b), tt(shift), 8).numpy(), got)
    assert np.array_equal(arith.encode(tt(levels), tt(w), tt(b), tt(shift)).numpy(), got)


def test_glu_residual_numpy_equals_torch_and_float_glu():
    H = 16
    lut_bits, in_frac, out_frac = 9, 5, 10
    z = (np.arange(2 ** lut_bits) - 2 ** (lut_bits - 1)) / 2 ** in_frac
    lut = np.round(2 ** out_frac / (1 + np.exp(-z))).astype(np.int64)
    stream = rng.integers(-3000, 3000, size=(4, H))
    acc = rng.integers(-2000, 2000, size=(4, 2 * H))
    bias = rng.integers(-100, 100, size=2 * H)
    vs, gs, os_ = np.zeros(H, np.int64), np.full(H, 3, np.int64), np.full(H, 10, np.int64)
    got = arith.glu_residual(stream, acc, bias, vs, gs, os_, lut)
    tt = lambda a: torch.as_tensor(a)
    assert np.array_equal(arith.glu_residual(tt(stream), tt(acc), tt(bias), tt(vs), tt(gs), tt(os_), tt(lut)).numpy(), got)
    # the integer GLU tracks the float one: gate resolution 1/32, sigmoid to 1/1024 -> |err| <= |a|/128 + 1
    a, g = (acc + bias)[:, :H], (acc + bias)[:, H:] / 2 ** 3 / 2 ** in_frac
    want = stream + a / (1 + np.exp(-np.clip(g, -8, 8)))
    assert np.all(np.abs(got - want) <= np.abs(a) / 128 + 1)


def test_lif_scan_matches_step_loop():
    a = torch.as_tensor(rng.integers(-300, 900, size=(3, 50, 8)))
    spikes, volts, _ = lif_scan(a, 3584, 256)
    v = np.zeros((3, 8), dtype=np.int64)
    for t in range(50):
        v, s = arith.lif_step(v, a[:, t].numpy(), 3584, 256)
        assert np.array_equal(s, spikes[:, t].numpy()) and np.array_equal(v, volts[:, t].numpy())
