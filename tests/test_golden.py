"""Tests for hwgen.golden: the integer ops (the definition of every op) and the graph interpreter.

Hand-computed examples state their arithmetic in comments; property tests compare against exact Python
integer / Fraction arithmetic or float references with bounds derived (and stated) below.
"""

from __future__ import annotations

import math
import warnings
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from hwgen.errors import HwgenError
from hwgen.golden import RangeError, ops, run
from hwgen.ir.builder import GraphBuilder
from hwgen.ir.dyadic import EXP_BITS, common_dyadic, dyadic, softmax_lut
from hwgen.ir.graph import Const, Graph, Node, TensorType
from hwgen.ops import OPS
from tests.synthetic import SyntheticConfig, random_graph
from hwgen.ir.types import IntType, signed_bits_for
from hwgen.ir.verify import infer_widths, verify

I8, U8, I4, U4 = IntType(8), IntType(8, False), IntType(4), IntType(4, False)
NONZERO_M = st.integers(-(2**15), 2**15).filter(bool)  # rescale multipliers (a zero one makes widths moot)
FAST = settings(deadline=None, max_examples=60, suppress_health_check=[HealthCheck.too_slow])


def int_types(min_bits: int = 2, max_bits: int = 12):
    """Strategy: signed or unsigned IntType (signed ones have at least 2 bits)."""
    return st.builds(lambda b, s: IntType(max(b, 2) if s else b, s),
                     st.integers(min_bits, max_bits), st.booleans())


def exact_requant(acc: int, m0: int, shift: int, dtype: IntType, zp: int = 0) -> int:
    """The rounding rule in exact rationals: clamp(floor(acc*m0 / 2**shift + 1/2) + zp)."""
    rounded = math.floor(Fraction(acc * m0, 1 << shift) + Fraction(1, 2))
    return min(max(rounded + zp, dtype.qmin), dtype.qmax)


# ---- round_shift / requantize: the one rounding rule ---------------------------------------------------


def test_round_shift_ties_round_half_up():
    # /4 by (v + 2) >> 2: 5/4=1.25 -> 1, 6/4=1.5 -> 2, -6/4=-1.5 -> -1, -5/4=-1.25 -> -1, -7/4=-1.75 -> -2,
    # 2/4=0.5 -> 1, -2/4=-0.5 -> 0, -3/4=-0.75 -> -1, 4/4 -> 1, 0 -> 0
    got = ops.round_shift(np.array([5, 6, -6, -5, -7, 2, -2, -3, 4, 0]), 2)
    assert got.tolist() == [1, 2, -1, -1, -2, 1, 0, -1, 1, 0]


def test_round_shift_shift_zero_has_no_rounding_term_and_shift_is_per_element():
    values = np.array([-3, -1, 0, 1, 3, 2**40 + 1])
    assert ops.round_shift(values, 0).tolist() == values.tolist()
    # 5 >> 0 = 5; (5+1) >> 1 = 3 (2.5 -> 3); (5+2) >> 2 = 1; (5+4) >> 3 = 1 (0.625 -> 1); (5+8) >> 4 = 0
    assert ops.round_shift(np.array([5, 5, 5, 5, 5]), np.array([0, 1, 2, 3, 4])).tolist() == [5, 3, 1, 1, 0]
    with pytest.raises(ValueError):
        ops.round_shift(np.array([1]), -1)


def test_requantize_hand_values():
    # 3 * 5 = 15; (15 + 4) >> 3 = 2 (1.875 -> 2)
    assert ops.requantize(np.array([3]), 5, 3, I8).tolist() == [2]
    # -3 * 5 = -15; (-15 + 4) >> 3 = -2 (-1.875 -> -2); -1 * 6 = -6, (-6 + 4) >> 3 = -1 (-0.75 -> -1)
    assert ops.requantize(np.array([-3, -1]), np.array([5, 6]), 3, I8).tolist() == [-2, -1]
    # shift 0: acc * m0, exactly
    assert ops.requantize(np.array([-7, 9]), 3, 0, I8).tolist() == [-21, 27]


def test_requantize_saturates_signed_and_unsigned():
    assert ops.requantize(np.array([1000, -1000, 127, -128]), 1, 0, I8).tolist() == [127, -128, 127, -128]
    assert ops.requantize(np.array([20, -3, 15, 0]), 1, 0, U4).tolist() == [15, 0, 15, 0]
    # 1000 * 7 = 7000, >> 4 with rounding = 438 (437.5 -> 438) -> clamp to 127
    assert ops.requantize(np.array([1000]), 7, 4, I8).tolist() == [127]
    # after rounding to +-8 and saturation i4 -> [-8, 7]
    assert ops.requantize(np.array([31, -31]), 1, 2, I4).tolist() == [7, -8]  # 7.75 -> 8 -> 7; -7.75 -> -8


def test_requantize_zero_point_added_after_rounding_then_clamped():
    # acc 6, shift 2: round(1.5) = 2, + zp 3 = 5. (Adding zp before rounding would give (6+3+2)>>2 = 2.)
    assert ops.requantize(np.array([6]), 1, 2, I8, zp=3).tolist() == [5]
    # 600 >> 2 = 150, + 128 = 278 -> u8 saturates at 255 (clamping before adding zp would give 278)
    assert ops.requantize(np.array([600, -600]), 1, 2, U8, zp=128).tolist() == [255, 0]
    # -600 >> 2 = -150, + 128 = -22 -> 0; 4 >> 2 = 1 + 128 = 129
    assert ops.requantize(np.array([-600, 4]), 1, 2, U8, zp=128).tolist() == [0, 129]


@FAST
@given(
    accs=st.lists(st.integers(-(2**40), 2**40), min_size=1, max_size=20),
    m0=st.integers(-(2**16), 2**16),
    shift=st.integers(0, 40),
    dtype=int_types(2, 32),
    zp=st.integers(-300, 300),
)
def test_requantize_equals_exact_fraction_rule(accs, m0, shift, dtype, zp):
    # |acc * m0| <= 2**56 and the rounding term <= 2**39: exact in int64
    got = ops.requantize(np.array(accs, dtype=np.int64), m0, shift, dtype, zp).tolist()
    assert got == [exact_requant(a, m0, shift, dtype, zp) for a in accs]


@FAST
@given(values=st.lists(st.integers(-(2**61), 2**61), min_size=1, max_size=20), shift=st.integers(0, 61))
def test_round_shift_is_within_half_and_rounds_ties_up(values, shift):
    got = ops.round_shift(np.array(values, dtype=np.int64), shift).tolist()
    for v, r in zip(values, got):
        err = Fraction(r) - Fraction(v, 1 << shift)
        assert -Fraction(1, 2) < err <= Fraction(1, 2), (v, shift, r)  # half up: ties go to +1/2


@FAST
@given(accs=st.lists(st.integers(-(2**30), 2**30), min_size=1, max_size=20), shift=st.integers(0, 12),
       dtype=int_types(2, 16))
def test_requantize_output_always_in_type_and_saturates_exactly(accs, shift, dtype):
    got = ops.requantize(np.array(accs), 1, shift, dtype)
    assert dtype.contains(got)
    for a, y in zip(accs, got.tolist()):
        unclamped = math.floor(Fraction(a, 1 << shift) + Fraction(1, 2))
        if unclamped >= dtype.qmax:
            assert y == dtype.qmax
        elif unclamped <= dtype.qmin:
            assert y == dtype.qmin
        else:
            assert y == unclamped


# ---- linear, attention, add, affine, avgpool ----------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 40), st.integers(1, 5), st.integers(1, 5), st.integers(0, 62), st.integers(0, 2**31))
@example(k=3, rows=2, cols=2, bits=26, seed=0)  # max|a| * max|b| * K just over 2**53: the int64 path
@example(k=1, rows=1, cols=1, bits=62, seed=1)
def test_int_matmul_equals_int64_einsum_on_both_paths(k, rows, cols, bits, seed):
    """``int_matmul`` (float64 BLAS below the 2**53 bound, int64 above it) equals the plain int64 product
    exactly, at every magnitude up to 62 bits, with a broadcast leading axis."""
    from hwgen.ops.rounding import int_matmul

    rng = np.random.default_rng(seed)
    top = 1 << bits
    a = rng.integers(-top, top, size=(3, rows, k), dtype=np.int64, endpoint=True)
    b = rng.integers(-top, top, size=(k, cols), dtype=np.int64, endpoint=True)
    a[0, 0, 0], b[0, 0] = top, -top  # the extremes of the range
    with np.errstate(over="ignore"):
        want = np.einsum("...ik,kj->...ij", a, b)
    assert np.array_equal(int_matmul(a, b), want)


def test_linear_hand_example_per_channel_bias_relu():
    x = np.array([[1, -2, 3]])
    w = np.array([[1, 0, -1], [2, 1, 1]])
    bias = np.array([4, -9])
    # acc0 = 1 - 3 + 4 = 2; acc1 = 2 - 2 + 3 - 9 = -6
    assert ops.linear_acc(x, w, bias).tolist() == [[2, -6]]
    m0, shift = np.array([3, 1]), np.array([2, 2])
    # ch0: 2*3 = 6, (6+2)>>2 = 2 (1.5 -> 2); ch1: -6, (-6+2)>>2 = -1 (-1.5 -> -1)
    assert ops.linear(x, w, bias, m0, shift, I8).tolist() == [[2, -1]]
    assert ops.linear(x, w, bias, m0, shift, I8, relu=True).tolist() == [[2, 0]]
    # zp 1: [3, 0]; ReLU in the zero-point domain clamps at zp: [3, 1]
    assert ops.linear(x, w, bias, m0, shift, I8, zp=1).tolist() == [[3, 0]]
    assert ops.linear(x, w, bias, m0, shift, I8, zp=1, relu=True).tolist() == [[3, 1]]
    # without bias: acc [-2, 3]; ch0: -2*3 = -6, (-6+2)>>2 = -1 (-1.5 -> -1); ch1: 3, (3+2)>>2 = 1 (0.75 -> 1)
    assert ops.linear_acc(x, w, None).tolist() == [[-2, 3]]
    assert ops.linear(x, w, None, m0, shift, I8).tolist() == [[-1, 1]]


def test_linear_matches_plain_loops_and_float_reference():
    rng = np.random.default_rng(1)
    x = rng.integers(-128, 128, size=(5, 4, 7))  # batch 5, L 4, K 7
    w = rng.integers(-128, 128, size=(6, 7))
    bias = rng.integers(-1000, 1000, size=6)
    m0 = rng.integers(1 << 14, 1 << 15, size=6)
    shift = rng.integers(15, 24, size=6)
    got = ops.linear(x, w, bias, m0, shift, I8, zp=-3, relu=True)
    for b in range(5):
        for i in range(4):
            for n in range(6):
                acc = sum(int(x[b, i, k]) * int(w[n, k]) for k in range(7)) + int(bias[n])
                y = exact_requant(acc, int(m0[n]), int(shift[n]), I8, -3)
                assert got[b, i, n] == max(y, -3)
                real = acc * m0[n] / 2.0 ** shift[n]  # float reference: within 1/2 before clamping
                if I8.qmin < y < I8.qmax:
                    assert abs((y + 3) - real) <= 0.5


def ref_attn_scores(q, k, heads):
    lq, width = q.shape
    d = width // heads
    return [[[sum(int(q[i, h * d + t]) * int(k[j, h * d + t]) for t in range(d)) for j in range(k.shape[0])]
             for i in range(lq)] for h in range(heads)]


def ref_attn_apply(p, v):
    heads, lq, lk = p.shape
    d = v.shape[1] // heads
    return [[sum(int(p[h, i, j]) * int(v[j, h * d + t]) for j in range(lk))
             for h in range(heads) for t in range(d)] for i in range(lq)]


def test_attention_hand_example_two_heads():
    q = np.array([[1, 2, 3, 4]])
    k = np.array([[1, 1, 1, 1], [0, 1, 0, -1]])
    # head0 (dims 0,1): [1+2, 0+2] = [3, 2]; head1 (dims 2,3): [3+4, 0-4] = [7, -4]
    assert ops.attn_scores_acc(q, k, 2).tolist() == [[[3, 2]], [[7, -4]]]
    # m0 3 / 2**1: [4.5, 3, 10.5, -6] -> [5, 3, 11, -6]
    assert ops.attn_scores(q, k, 2, 3, 1, I8).tolist() == [[[5, 3]], [[11, -6]]]
    p = np.array([[[1, 2]], [[3, 0]]])
    v = np.array([[1, 2, 3, 4], [5, 6, 7, 8]])
    # head0 columns 0,1: 1*[1,2] + 2*[5,6] = [11, 14]; head1 columns 2,3: 3*[3,4] + 0 = [9, 12]
    assert ops.attn_apply_acc(p, v).tolist() == [[11, 14, 9, 12]]
    # m0 1 / 2**2: [2.75, 3.5, 2.25, 3] -> [3, 4, 2, 3]
    assert ops.attn_apply(p, v, 1, 2, I8).tolist() == [[3, 4, 2, 3]]


@pytest.mark.parametrize("heads", [1, 2, 4])
def test_attention_matches_plain_loops(heads):
    rng = np.random.default_rng(heads)
    length, width, batch = 5, 8, 3
    q, k, v = (rng.integers(-128, 128, size=(batch, length, width)) for _ in range(3))
    p = rng.integers(0, 256, size=(batch, heads, length, length))
    scores = ops.attn_scores_acc(q, k, heads)
    applied = ops.attn_apply_acc(p, v)
    assert scores.shape == (batch, heads, length, length) and applied.shape == (batch, length, width)
    for b in range(batch):
        assert scores[b].tolist() == ref_attn_scores(q[b], k[b], heads)
        assert applied[b].tolist() == ref_attn_apply(p[b], v[b])
    m0, shift = 23171, 20
    got = ops.attn_scores(q, k, heads, m0, shift, I8, zp=2)
    want = [[exact_requant(a, m0, shift, I8, 2) for a in row] for row in scores.reshape(-1, length).tolist()]
    assert got.reshape(-1, length).tolist() == want


def test_add_affine_avgpool_hand_examples():
    # add: 3*3 + (-5)*2 + 1 = 0; 1*3 + 2*2 + 1 = 8; 2*3 + 0 + 1 = 7; shift 2: [0, 2, 2] (7/4 = 1.75 -> 2)
    a, b = np.array([3, 1, 2]), np.array([-5, 2, 0])
    assert ops.add_acc(a, b, 3, 2, 1).tolist() == [0, 8, 7]
    assert ops.add(a, b, 3, 2, 1, 2, I8).tolist() == [0, 2, 2]
    assert ops.add(a, b, 3, 2, 1, 2, I8, zp=-1).tolist() == [-1, 1, 1]
    # affine: [2*5 + 1, -3*7 + 0] = [11, -21]; shifts [1, 2]: (11+1)>>1 = 6 (5.5), (-21+2)>>2 = -5 (-5.25)
    x = np.array([[2, -3]])
    assert ops.affine_acc(x, np.array([5, 7]), np.array([1, 0])).tolist() == [[11, -21]]
    assert ops.affine(x, np.array([5, 7]), np.array([1, 0]), np.array([1, 2]), I8).tolist() == [[6, -5]]
    # avgpool over L=3: sums [8, -7] + bias 1 = [9, -6]; * 11/32 (~1/3): 99/32 = 3.09 -> 3,
    # -66/32 = -2.06 -> -2
    x = np.array([[1, -2], [3, -2], [4, -3]])
    assert ops.avgpool_acc(x, 1).tolist() == [[9, -6]]
    assert ops.avgpool(x, 11, 5, 1, I8).tolist() == [[3, -2]]
    # batched: pooling is over the time axis (-2), never over channels or the batch
    xb = np.stack([x, -x])
    assert ops.avgpool_acc(xb, 0).tolist() == [[[8, -7]], [[-8, 7]]]


def test_add_affine_avgpool_match_float_reference():
    rng = np.random.default_rng(7)
    a, b = rng.integers(-128, 128, size=(2, 50, 6))
    ma, mb, shift = common_dyadic(0.37, 0.81)
    got = ops.add(a, b, ma, mb, 0, shift, IntType(16))
    real = a * 0.37 + b * 0.81
    # error: rounding 1/2 + dyadic approximation (|a|,|b| <= 128 times <= 2**-shift each)
    assert np.abs(got - real).max() <= 0.5 + 256 * 2.0**-shift
    x = rng.integers(-128, 128, size=(40, 24, 5))
    m0, sh = dyadic(1 / 24)
    got = ops.avgpool(x, m0, sh, 0, IntType(16))
    assert np.abs(got[:, 0, :] - x.mean(axis=1)).max() <= 0.5 + 24 * 128 * abs(m0 / 2**sh - 1 / 24)


# ---- integer square root ------------------------------------------------------------------------------


def test_isqrt_edge_values():
    edges = [0, 1, 2, 3, 4, 5, 8, 9, 15, 16, 17, 99, 100, 2**50 - 1, 2**50, 2**62 - 1, 2**62]
    squares = [s * s for s in (2, 3, 1000, 2**20 + 7, 2**25 - 1, 2**31 - 1)]
    values = edges + squares + [s - 1 for s in squares] + [s + 1 for s in squares]
    got = ops.isqrt(np.array(values, dtype=np.int64)).tolist()
    assert got == [math.isqrt(v) for v in values]
    assert ops.isqrt(np.array(17)).tolist() == 4  # scalars work too
    with pytest.raises(ValueError):
        ops.isqrt(np.array([4, -1]))


@FAST
@given(st.lists(st.integers(0, 2**50), min_size=1, max_size=30))
def test_isqrt_equals_math_isqrt(values):
    assert ops.isqrt(np.array(values, dtype=np.int64)).tolist() == [math.isqrt(v) for v in values]


@FAST
@given(st.lists(st.integers(1, 2**25), min_size=1, max_size=30), st.sampled_from([-1, 0, 1]))
def test_isqrt_around_perfect_squares(roots, offset):
    values = [r * r + offset for r in roots]
    assert ops.isqrt(np.array(values, dtype=np.int64)).tolist() == [math.isqrt(v) for v in values]


# ---- softmax -------------------------------------------------------------------------------------------


def test_softmax_hand_example():
    # scale ln 2: lut[i] = 2**15 * 2**-i = [32768, 16384, 8192, 4096]
    lut = softmax_lut(math.log(2), 2)
    assert lut.tolist() == [32768, 16384, 8192, 4096]
    e, s, r = ops.softmax_parts(np.array([[3, 2, 1, 0]]), lut, 31)
    # s = 61440, r = floor(2**31 / 61440) = 34952 (34952.53)
    assert e.tolist() == [[32768, 16384, 8192, 4096]] and s.tolist() == [[61440]] and r.tolist() == [[34952]]
    # e*r / 2**23: 136.53 -> 137, 68.27 -> 68, 34.13 -> 34, 17.07 -> 17 (float: 256 * [8, 4, 2, 1] / 15)
    assert ops.softmax(np.array([[3, 2, 1, 0]]), lut, 31, U8).tolist() == [[137, 68, 34, 17]]
    # invariant to a shift of the whole row (it subtracts the row max)
    assert ops.softmax(np.array([[-5, -6, -7, -8]]), lut, 31, U8).tolist() == [[137, 68, 34, 17]]


def test_softmax_lut_definition():
    for scale, bits in ((0.05, 8), (0.3, 4), (2.0, 2)):
        lut = softmax_lut(scale, bits)
        assert lut.shape == (1 << bits,) and lut[0] == 1 << EXP_BITS and np.all(np.diff(lut) <= 0)
        exact = [math.floor(2**EXP_BITS * math.exp(-i * scale) + 0.5) for i in range(1 << bits)]
        assert lut.tolist() == exact


def test_softmax_saturates_at_255():
    lut = softmax_lut(0.5, 8)
    # one element: e*r = 2**15 * 2**16 = 2**31 -> 256 units of 2**-8, clamped to 255
    assert ops.softmax(np.array([[7]]), lut, 31, U8).tolist() == [[255]]
    # one dominant element (others' lut entries are 0): 256 -> 255, the rest 0
    row = np.array([[127, -128, -128, -128]])
    assert ops.softmax(row, lut, 31, U8).tolist() == [[255, 0, 0, 0]]
    # a 4-bit output (units 2**-4) saturates at 15
    assert ops.softmax(np.array([[3]]), lut, 31, U4).tolist() == [[15]]


# Bound on |y - min(256 p, 255)| in output LSBs (units of 2**-8), p = float softmax of x*scale, row length L:
#  * LUT rounding: e_j = E_j + d_j, E_j = 2**15 exp(-z_j), |d_j| <= 1/2 and d = 0 at the row max, so with
#    S = sum E >= 2**15: |e_i/s - E_i/S| <= (|d_i| + p_i |sum d|) / s <= (1/2 + p_i (L-1)/2) / 2**15,
#    i.e. <= (1 + p_i (L-1)) / 256 LSB;
#  * reciprocal floor: 2**31/s - 1 < r <= 2**31/s costs < e_i / 2**23 <= 2**15 / 2**23 = 1/256 LSB;
#  * final rounding (half up): <= 1/2 LSB; the clamp to 255 only moves y towards min(256 p, 255).
# Total: 1/2 + (2 + p_i (L-1)) / 256 LSB (<= 1/2 + (L+1)/256). Measured maximum over the rows below: 0.578
# (0.512 for random rows alone).
def softmax_bound(p: np.ndarray, length: int) -> np.ndarray:
    return 0.5 + (2 + p * (length - 1)) / 256


@pytest.mark.parametrize("bits", [2, 4, 6, 8])
def test_softmax_against_float_within_derived_bound(bits):
    rng = np.random.default_rng(bits)
    t = IntType(bits)
    worst = 0.0
    for scale in (0.003, 0.02, 0.1, 0.5, 2.0):
        lut = softmax_lut(scale, bits)
        for length in (1, 2, 5, 24, 64):
            x = rng.integers(t.qmin, t.qmax + 1, size=(400, length))
            x[:20] = x[:20, :1]  # constant rows (all ties)
            x[20:40, 1:] = t.qmin  # one dominant element
            y = ops.softmax(x, lut, 31, U8)
            z = x * scale
            p = np.exp(z - z.max(axis=-1, keepdims=True))
            p /= p.sum(axis=-1, keepdims=True)
            err = np.abs(y - np.minimum(256 * p, 255))
            assert np.all(err <= softmax_bound(p, length) + 1e-9), (scale, length, err.max())
            worst = max(worst, float(err.max()))
            assert y.max() <= 255 and y.min() >= 0
            # row sums: sum(e*r)/2**23 = s*r/2**23 in (256 - L/256, 256]; each rounding moves it by
            # [-1/2, 1/2);            # the clamp removes at most 1
            sums = y.sum(axis=-1)
            assert np.all(np.abs(sums - 256) <= length / 2 + length / 256 + 1)
    assert worst > 0.4  # the comparison is not vacuous: rounding errors near 1/2 LSB do occur


def test_softmax_rows_sum_to_about_256_at_window_24():
    rng = np.random.default_rng(24)
    lut = softmax_lut(0.05, 8)
    y = ops.softmax(rng.integers(-128, 128, size=(2000, 24)), lut, 31, U8)
    sums = y.sum(axis=-1)
    # derived above: |sum - 256| <= L/2 + L/256 + 1 = 13.09 for L = 24 (measured: 11)
    assert np.all(np.abs(sums - 256) <= 12 + 24 / 256 + 1)
    assert abs(sums.mean() - 256) < 2  # the rounding errors mostly cancel


# ---- layernorm -----------------------------------------------------------------------------------------


def test_layernorm_hand_example():
    # x = [1, 3], C = 2: xc = 2x - 4 = [-2, 2]; q = 8; sd = isqrt(8 // 2) = 2; recip_bits 8: r = 256//2 = 128
    # n = round_shift(xc * 128, 8 - 4) = [-16, 16] = +-1.0 with 4 fraction bits; (x - mean)/std = [-1, 1]
    xc, q, sd, r, n = ops.layernorm_parts(np.array([[1, 3]]), 4, 8)
    assert (xc.tolist(), q.tolist(), sd.tolist()) == ([[-2, 2]], [[8]], [[2]])
    assert (r.tolist(), n.tolist()) == ([[128]], [[-16, 16]])
    # y = requantize(n * gamma + beta, 1, shift): [-16*3 + 5, 16*2 - 1] / 4 = [-10.75, 7.75] -> [-11, 8]
    y = ops.layernorm(np.array([[1, 3]]), np.array([3, 2]), np.array([5, -1]), 2, 4, 8, I8)
    assert y.tolist() == [[-11, 8]]


def test_layernorm_constant_row_gives_beta_without_division_by_zero():
    gamma, beta = np.array([100, -50, 7, 9]), np.array([40, -8, 3, 0])
    rows = np.array([[5, 5, 5, 5], [-128, -128, -128, -128], [127, 127, 127, 127], [0, 0, 0, 0]])
    with warnings.catch_warnings(), np.errstate(all="raise"):
        warnings.simplefilter("error")
        xc, q, sd, r, n = ops.layernorm_parts(rows, 8, 24)
        y = ops.layernorm(rows, gamma, beta, 2, 8, 24, I8)
    assert np.all(xc == 0) and np.all(q == 0) and np.all(sd == 1) and np.all(n == 0)
    # beta / 4 rounded half up: 10, -2, 0.75 -> 1, 0
    assert y.tolist() == [[10, -2, 1, 0]] * 4


# Bound for z = (x - mean) / std (population std) against n / 2**norm_bits, for a non-constant row:
# u = sqrt(q / C) = C std exactly (q is a multiple of C), sd = floor(u) >= 1, z_i = xc_i / u.
#  * n = round_shift(xc r, recip_bits - norm_bits): |n/2**nb - xc r/2**rb| <= 2**-(nb+1)
#  * r = floor(2**rb / sd):                          |xc r/2**rb - xc/sd| < |xc| / 2**rb
#  * sd = floor(u), u - sd < 1:                      |xc/sd - xc/u| = |z| (u - sd)/sd < |z| / sd
# so |n/2**nb - z| < 2**-(nb+1) + |xc|/2**rb + |z|/sd (checked per element). For random 8-bit rows with C=16,
# nb=8, rb=24 the measured maximum is about 0.0048 (the stated bound there is at most about 0.0066).
def test_layernorm_against_float_within_derived_bound():
    rng = np.random.default_rng(3)
    for c, bits, nb, rb in ((16, 8, 8, 24), (4, 4, 6, 20), (64, 6, 10, 30), (3, 8, 8, 16)):
        t = IntType(bits)
        x = rng.integers(t.qmin, t.qmax + 1, size=(3000, c))
        x[:50] = 0
        x[:50, 0] = 1  # tiny variance: the floor of sd matters most here
        x = x[np.ptp(x, axis=-1) > 0]
        xc, q, sd, r, n = ops.layernorm_parts(x, nb, rb)
        z = (x - x.mean(axis=-1, keepdims=True)) / x.std(axis=-1, keepdims=True)
        err = np.abs(n / 2.0**nb - z)
        bound = 2.0 ** -(nb + 1) + np.abs(xc) / 2.0**rb + np.abs(z) / sd
        assert np.all(err <= bound + 1e-12), (c, float(err.max()))
        if (c, bits) == (16, 8):
            big = np.ptp(x, axis=-1) > 10
            assert err[big].max() < 0.006
    assert np.abs(n / 2.0**nb - z).max() > 2.0 ** -(nb + 2)  # not vacuous


# ---- declared widths hold for extreme operands (and are tight where stated) ----------------------------


def _set_width(graph: Graph, name: str, key: str, delta: int) -> Graph:
    """The graph with one declared width of node ``name`` changed by ``delta`` (no verification)."""
    nodes = []
    for n in graph.nodes:
        if n.name == name:
            n = n.with_attrs(widths={**n.attrs["widths"], key: n.attrs["widths"][key] + delta})
        nodes.append(n)
    return graph.replace_nodes(nodes)


def _pow2(n: int) -> bool:
    return n & (n - 1) == 0


def _check_extremes(cases, name: str):
    """cases: (graph, input, exact acc extreme). Runs every case (must not raise); returns (declared, needed,
    the case attaining the extreme that needs the most bits)."""
    declared = {graph.node(name).attrs["widths"]["acc"] for graph, _, _ in cases}
    assert len(declared) == 1  # the width depends on the types only, not on the constants' values
    for graph, x, _ in cases:
        run(graph, x)  # must not raise RangeError
    worst = max(cases, key=lambda c: signed_bits_for(c[2]))
    return declared.pop(), signed_bits_for([c[2] for c in cases]), worst


def _expect_one_bit_less_fails(case, name: str):
    graph, x, _ = case
    with pytest.raises(RangeError, match=rf"node '{name}': acc"):
        run(_set_width(graph, name, "acc", -1), x)


# What is checked, per op (N = the number of products summed):
#  * linear, attn_scores, attn_apply: every all-qmin/all-qmax combination of operands runs without RangeError;
#    with both operands signed, no bias and N a power of two the declared acc is exactly the width the extreme
#    needs (one bit less raises RangeError); otherwise the declared width exceeds what the extremes need by at
#    most [an operand unsigned] + [N not a power of two] + [bias present] bits (the formula's known slack).
#  * add, affine, avgpool: extremes fit; the slack is at most 4, 3 and 2 bits respectively (the bias bit is
#    added even for a zero bias, and a multiplier m takes signed_bits_for(m) bits for |m| < 2**(bits-1)).
@FAST
@given(tx=int_types(2, 12), tw=int_types(2, 12), k=st.integers(1, 40),
       bias_bits=st.none() | st.integers(2, 24))
def test_linear_acc_width_holds_on_extremes_and_is_tight(tx, tw, k, bias_bits):
    cases = []
    biases = [None] if bias_bits is None else [IntType(bias_bits).qmin, IntType(bias_bits).qmax]
    for wv in sorted({tw.qmin, tw.qmax}):
        for bv in biases:
            b = GraphBuilder("x", (2, k), tx)
            b.linear("lin", "x", np.full((3, k), wv), None if bv is None else np.full(3, bv), 1, 0, I8, tw)
            graph = b.finish("lin")
            cases += [(graph, np.full((2, k), xv), xv * wv * k + (bv or 0)) for xv in (tx.qmin, tx.qmax)]
    declared, needed, worst = _check_extremes(cases, "lin")
    assert declared >= needed
    unsigned = not (tx.signed and tw.signed)
    assert declared - needed <= unsigned + (not _pow2(k)) + (bias_bits is not None)
    if not unsigned and bias_bits is None:
        assert declared - needed == (0 if _pow2(k) else 1)
        if _pow2(k):
            _expect_one_bit_less_fails(worst, "lin")


@FAST
@given(tq=int_types(2, 10), tk=int_types(2, 10), heads=st.sampled_from([1, 2, 4]), d=st.integers(1, 9),
       length=st.integers(1, 4))
def test_attn_scores_acc_width_holds_on_extremes_and_is_tight(tq, tk, heads, d, length):
    width = heads * d
    cases = []
    for kv in sorted({tk.qmin, tk.qmax}):
        b = GraphBuilder("q", (length, width), tq)
        kname = b.const("k", np.full((length + 1, width), kv), tk)
        b.attn_scores("s", "q", kname, heads, 1, 0, I8)
        graph = b.finish("s")
        cases += [(graph, np.full((length, width), qv), qv * kv * d) for qv in (tq.qmin, tq.qmax)]
    declared, needed, worst = _check_extremes(cases, "s")
    unsigned = not (tq.signed and tk.signed)
    assert 0 <= declared - needed <= unsigned + (not _pow2(d))
    if not unsigned:
        assert declared - needed == (0 if _pow2(d) else 1)
        if _pow2(d):
            _expect_one_bit_less_fails(worst, "s")


@FAST
@given(tp=int_types(2, 9), tv=int_types(2, 10), heads=st.sampled_from([1, 2, 4]), lk=st.integers(1, 33))
def test_attn_apply_acc_width_holds_on_extremes_and_is_tight(tp, tv, heads, lk):
    cases = []
    for pv in sorted({tp.qmin, tp.qmax}):
        b = GraphBuilder("v", (lk, 2 * heads), tv)
        pname = b.const("p", np.full((heads, 3, lk), pv), tp)
        b.attn_apply("o", pname, "v", 1, 0, I8)
        graph = b.finish("o")
        cases += [(graph, np.full((lk, 2 * heads), vv), pv * vv * lk) for vv in (tv.qmin, tv.qmax)]
    declared, needed, worst = _check_extremes(cases, "o")
    unsigned = not (tp.signed and tv.signed)
    assert 0 <= declared - needed <= unsigned + (not _pow2(lk))
    if not unsigned:
        assert declared - needed == (0 if _pow2(lk) else 1)
        if _pow2(lk):
            _expect_one_bit_less_fails(worst, "o")


@FAST
@given(ta=int_types(2, 12), tb=int_types(2, 12), ma=NONZERO_M, mb=NONZERO_M,
       bias=st.integers(-(2**20), 2**20) | st.just(0))
def test_add_acc_width_holds_on_extremes(ta, tb, ma, mb, bias):
    cases = []
    for bv in sorted({tb.qmin, tb.qmax}):
        b = GraphBuilder("a", (2, 3), ta)
        b.add("s", "a", b.const("b", np.full((2, 3), bv), tb), ma, mb, bias, 0, IntType(16))
        graph = b.finish("s")
        cases += [(graph, np.full((2, 3), av), av * ma + bv * mb + bias) for av in (ta.qmin, ta.qmax)]
    declared, needed, _ = _check_extremes(cases, "s")
    assert 0 <= declared - needed <= 4


def test_add_acc_width_slack_is_the_bias_bit_for_extreme_multipliers():
    # a, b i8 = -128, ma = mb = -2**15: 2 * 2**22 = 2**23 needs 25 bits; declared max(8+16, 8+16)+1, +1 = 26
    b = GraphBuilder("a", (1,), I8)
    b.add("s", "a", b.const("b", np.array([-128]), I8), -(2**15), -(2**15), 0, 0, IntType(16))
    graph = b.finish("s")
    assert graph.node("s").attrs["widths"]["acc"] == 26 and signed_bits_for(2**23) == 25
    run(_set_width(graph, "s", "acc", -1), np.array([-128]))  # 25 bits still hold it: the zero bias's bit
    with pytest.raises(RangeError, match="node 's': acc"):
        run(_set_width(graph, "s", "acc", -2), np.array([-128]))


@FAST
@given(tx=int_types(2, 12), mul=NONZERO_M, bias=st.integers(-(2**20), 2**20) | st.just(0))
@example(tx=IntType(2, False), mul=-16385, bias=16387)
def test_affine_acc_width_holds_on_extremes(tx, mul, bias):
    b = GraphBuilder("x", (2, 3), tx)
    b.affine("a", "x", np.full(3, mul), np.full(3, bias), 0, IntType(16))
    graph = b.finish("a")
    cases = [(graph, np.full((2, 3), xv), xv * mul + bias) for xv in (tx.qmin, tx.qmax)]
    declared, needed, _ = _check_extremes(cases, "a")
    assert declared >= needed
    # tight up to 3 bits against the product and bias added without cancelling (a u2 input times -16385 plus
    # 16387 spans -32768..16387, 16 bits, where the widths of its terms declare 20)
    worst = max(abs(xv * mul) for xv in (tx.qmin, tx.qmax)) + abs(bias)
    assert declared - signed_bits_for(worst) <= 3  # worst >= 0: it needs at least the bits of -worst


@FAST
@given(tx=int_types(2, 12), length=st.integers(1, 64), bias=st.integers(-(2**20), 2**20) | st.just(0))
def test_avgpool_acc_width_holds_on_extremes(tx, length, bias):
    b = GraphBuilder("x", (length, 2), tx)
    b.avgpool("p", "x", 1, 0, bias, IntType(16))
    graph = b.finish("p")
    cases = [(graph, np.full((length, 2), xv), xv * length + bias) for xv in (tx.qmin, tx.qmax)]
    declared, needed, _ = _check_extremes(cases, "p")
    assert 0 <= declared - needed <= 2
    if tx.signed and bias == 0 and _pow2(length):
        assert declared - needed == 1  # exactly the (unused) bias bit


def test_unsigned_bias_constant_gets_its_sign_bit_in_the_accumulator_width():
    # x i2 = -2, w i2 = -2, K = 1: product 4; bias u8 = 255: acc 259, which needs 10 signed bits
    t2 = IntType(2)
    consts = {"w": Const(np.array([[-2]]), t2), "b": Const(np.array([255]), U8),
              "m0": Const(np.array([1]), t2), "sh": Const(np.array([0]), U8),
              "mul": Const(np.array([-2]), t2)}
    lin = Node("linear", "lin", ("x",), {"weight": "w", "bias": "b", "m0": "m0", "shift": "sh", "zp": 0,
                                         "relu": False}, TensorType((1, 1), IntType(16)))
    aff = Node("affine", "aff", ("x",), {"mul": "mul", "bias": "b", "shift": "sh", "zp": 0},
               TensorType((1, 1), IntType(16)))
    for node in (lin, aff):
        graph = infer_widths(Graph("x", TensorType((1, 1), t2), (node,), consts, node.name))
        assert graph.node(node.name).attrs["widths"]["acc"] >= 10
        assert run(graph, np.array([[-2]])).tolist() == [[259]]


def test_unsigned_beta_constant_gets_its_sign_bit_in_the_layernorm_width():
    consts = {"g": Const(np.array([1, 1]), IntType(2)), "beta": Const(np.array([255, 255]), U8)}
    node = Node("layernorm", "ln", ("x",), {"gamma": "g", "beta": "beta", "shift": 0, "norm_bits": 0,
                                            "recip_bits": 16, "zp": 0}, TensorType((2,), IntType(16)))
    graph = infer_widths(Graph("x", TensorType((2,), I8), (node,), consts, "ln"))
    # x = [-128, 127]: xc = [-255, 255], sd = isqrt(2 * 255**2 // 2) = 255, r = 2**16 // 255 = 257,
    # n = round_shift(+-255 * 257, 16) = +-1 (65535/65536 -> 1), acc = n + 255 = [254, 256]: 10 signed bits
    assert graph.node("ln").attrs["widths"]["acc"] >= 10
    assert run(graph, np.array([-128, 127])).tolist() == [254, 256]


def _layernorm_graph(c: int, t: IntType, norm_bits: int, recip_bits: int, gamma: int, beta: int) -> Graph:
    b = GraphBuilder("x", (c,), t)
    b.layernorm("ln", "x", np.full(c, gamma), np.full(c, beta), 0, norm_bits, recip_bits, IntType(32))
    return b.finish("ln")


def _adversarial_rows(c: int, t: IntType, rng: np.random.Generator) -> np.ndarray:
    rows = [[t.qmin] * c, [t.qmax] * c]
    for k in range(1, c):  # k elements high, the rest low: the largest |x - mean| / std for small variance
        for lo, hi in ((t.qmin, t.qmax), (0, 1), (t.qmax - 1, t.qmax), (t.qmin, t.qmin + 1)):
            rows += [[hi] * k + [lo] * (c - k), [lo] * k + [hi] * (c - k)]
    rows = np.array(rows)
    return np.concatenate([rows, rng.integers(t.qmin, t.qmax + 1, size=(50, c))])


@FAST
@given(c=st.integers(2, 70), t=int_types(2, 10), norm_bits=st.integers(0, 12), recip_bits=st.integers(12, 30),
       seed=st.integers(0, 2**16))
def test_layernorm_widths_hold_on_adversarial_rows(c, t, norm_bits, recip_bits, seed):
    assume(norm_bits <= recip_bits)
    graph = _layernorm_graph(c, t, norm_bits, recip_bits, gamma=-(2**11), beta=2**14)
    rows = _adversarial_rows(c, t, np.random.default_rng(seed))
    with warnings.catch_warnings(), np.errstate(all="raise"):
        warnings.simplefilter("error")
        run(graph, rows)  # no RangeError for xc, sumsq, recip, prod, norm, acc; no division by zero
    w = graph.node("ln").attrs["widths"]
    xc, q, sd, r, n = ops.layernorm_parts(rows, norm_bits, recip_bits)
    # the normalised values use most of the declared 'norm' range: |x - mean|/std reaches sqrt(C-1)
    assert signed_bits_for(n) >= w["norm"] - 2
    assert signed_bits_for(r) == w["recip"]  # r = 2**recip_bits for a constant row: tight


# ---- interpreter ---------------------------------------------------------------------------------------


def _small_graph() -> Graph:
    rng = np.random.default_rng(5)
    b = GraphBuilder("x", (4, 3), I8)
    b.linear("lin", "x", rng.integers(-128, 128, (6, 3)), rng.integers(-500, 500, 6),
             rng.integers(1 << 14, 1 << 15, 6), 15, I8, I8, relu=True)
    b.avgpool("pool", "lin", 8192, 15, 0, I8)
    return b.finish("pool")


def test_interpreter_equals_composed_ops():
    graph = _small_graph()
    rng = np.random.default_rng(6)
    x = rng.integers(-128, 128, size=(10, 4, 3))
    c = graph.consts
    lin = ops.linear(x, c["lin.weight"].value, c["lin.bias"].value, c["lin.m0"].value,
                     c["lin.shift"].value, I8, relu=True)
    want = ops.avgpool(lin, 8192, 15, 0, I8)
    env = run(graph, x, return_all=True)
    assert np.array_equal(env["lin"], lin) and np.array_equal(env["pool"], want)
    assert np.array_equal(run(graph, x), want) and run(graph, x).dtype == np.int64


def test_interpreter_raises_range_error_naming_the_node():
    graph = _small_graph()
    x = np.full((4, 3), -128)
    run(graph, x)
    with pytest.raises(RangeError, match=r"node 'lin': acc in \[.*\] leaves its declared type i6"):
        run(_set_width(graph, "lin", "acc", 6 - graph.node("lin").attrs["widths"]["acc"]), x)
    # an output outside its type: ReLU at a zero point above i8's qmax makes 'lin' output 200
    bad = graph.replace_nodes([graph.node("lin").with_attrs(zp=200), graph.node("pool")])
    with pytest.raises(RangeError, match=r"node 'lin': output in \[200, 200\] leaves its declared type i8"):
        run(bad, x)
    assert issubclass(RangeError, HwgenError)


def test_interpreter_rejects_bad_inputs():
    graph = _small_graph()
    with pytest.raises(RangeError, match=r"node 'x': input in \[-129, 0\]"):
        run(graph, np.array([[-129, 0, 0]] * 4))
    with pytest.raises(HwgenError, match="input must be integer"):
        run(graph, np.zeros((4, 3)))
    with pytest.raises(HwgenError, match="input must be integer"):
        run(graph, np.zeros((4, 3), dtype=bool))
    for shape in ((4, 4), (3, 3), (3,), (12,), (2, 2, 4, 3), ()):
        with pytest.raises(HwgenError, match="does not match the graph input"):
            run(graph, np.zeros(shape, dtype=np.int64))


def test_interpreter_batched_equals_unbatched():
    graph, x = random_graph(SyntheticConfig(heads=2, norm="layer"), seed=3, batch=6)
    batched = run(graph, x, return_all=True)
    for i in range(len(x)):
        single = run(graph, x[i], return_all=True)
        for name, value in single.items():
            assert np.array_equal(value, batched[name][i]), name
    assert batched["head"].shape == (6, 1, 1)


# ---- synthetic graphs ----------------------------------------------------------------------------------

SYNTHETIC = [
    SyntheticConfig(),
    SyntheticConfig(heads=2, layers=2, norm="layer"),
    SyntheticConfig(heads=4, layers=3, norm="batch", bits_w=4, bits_a=4),
    SyntheticConfig(heads=4, layers=1, norm="layer", bits_w=2, bits_a=2, bits_in=2, bits_prob=2),
    SyntheticConfig(heads=2, layers=2, norm="batch", bits_w=6, bits_a=6, bits_in=6, bits_prob=6),
    SyntheticConfig(heads=1, layers=3, norm="layer", bits_w=3, bits_a=5, bits_in=7, bits_prob=4),
    SyntheticConfig(window=24, features=7, d_model=16, ffn=64, heads=1, layers=1, bits_w=8, bits_a=8),
]


@pytest.mark.parametrize("cfg", SYNTHETIC,
                         ids=lambda c: f"h{c.heads}l{c.layers}{c.norm[0]}w{c.bits_w}a{c.bits_a}L{c.window}")
def test_synthetic_graph_builds_verifies_and_runs(cfg):
    graph, x = random_graph(cfg, seed=11, batch=32)
    verify(graph)
    assert set(graph.meta["synthetic"]) >= {"heads", "layers", "norm"}
    assert {n.op for n in graph.nodes} >= {"linear", "attn_scores", "softmax", "attn_apply", "add", "avgpool"}
    assert {n.op for n in graph.nodes} <= set(OPS)
    assert ("layernorm" in {n.op for n in graph.nodes}) == (cfg.norm == "layer")
    assert all("widths" in n.attrs for n in graph.nodes)
    env = run(graph, x, return_all=True)
    assert env["head"].shape == (32, 1, cfg.outputs)
    # calibration: the internal activations use their range rather than being stuck at one value
    assert np.ptp(env["embed"]) > 0 and np.ptp(env["l0.softmax"]) > 0
    # widths follow from types, not from the calibration batch: any in-type input runs without RangeError
    t = graph.input_type.dtype
    rng = np.random.default_rng(0)
    shape = graph.input_type.shape
    extreme = np.stack([np.full(shape, t.qmin), np.full(shape, t.qmax),
                        np.where(np.indices(shape).sum(0) % 2 == 0, t.qmin, t.qmax),
                        *rng.integers(t.qmin, t.qmax + 1, size=(8, *shape))])
    run(graph, extreme)


def test_synthetic_graph_is_deterministic_and_seed_dependent():
    g1, x1 = random_graph(SyntheticConfig(heads=2), seed=4, batch=8)
    g2, x2 = random_graph(SyntheticConfig(heads=2), seed=4, batch=8)
    g3, _ = random_graph(SyntheticConfig(heads=2), seed=5, batch=8)
    assert g1.to_json() == g2.to_json() and np.array_equal(x1, x2)
    assert all(np.array_equal(g1.consts[k].value, g2.consts[k].value) for k in g1.consts)
    assert any(not np.array_equal(g1.consts[k].value, g3.consts[k].value) for k in g1.consts)
