"""The draws of Go's ``math/rand/v2`` with its PCG source, bit for bit, so that MIGBench's seeds give its traces.

MIGBench (https://github.com/FouoF/MIG-scheduler-benchmark, ``internal/workload/workload.go``) draws its
workloads from ``rand.New(rand.NewPCG(seed1, seed2))``: ``Float64`` picks profiles, ``NormFloat64`` the
log-normal durations, ``ExpFloat64`` the Poisson gaps. Written here from the published algorithms, checked
against Go's own output (``tests/simulate/test_gorand.py``):

- the source is PCG with a 128-bit LCG state (O'Neill's default multiplier and increment), advanced before
  each output, and the DXSM output function ("double xorshift multiply", with the 64-bit "cheap
  multiplier");
- ``Float64`` is the low 53 bits of one output over 2**53;
- ``NormFloat64`` and ``ExpFloat64`` are Marsaglia and Tsang's ziggurat ("The Ziggurat Method for Generating
  Random Variables", Journal of Statistical Software 5(8), 2000): 128 strips for the normal, 256 for the
  exponential, the tables built by the paper's set-up procedure and held as 32-bit floats and integers.
"""

from __future__ import annotations

import math
import struct

_MASK64 = (1 << 64) - 1
_MASK128 = (1 << 128) - 1
_MULTIPLIER = (2549297995355413924 << 64) | 4865540595714422341
_INCREMENT = (6364136223846793005 << 64) | 1442695040888963407
_CHEAP_MULTIPLIER = 0xDA942042E4DD58B5


def _f32(value: float) -> float:
    """``value`` rounded to a 32-bit float (the tables are float32)."""
    return float(struct.unpack("f", struct.pack("f", value))[0])


_NORM_R = 3.442619855899
_NORM_V = 9.91256303526217e-3
_EXP_R = 7.69711747013104972
_EXP_V = 3.949659822581572e-3


def _normal_tables() -> tuple[list[int], list[float], list[float]]:
    m1 = 2.0**31
    dn = tn = _NORM_R
    q = _NORM_V / math.exp(-0.5 * dn * dn)
    kn = [0] * 128
    wn = [0.0] * 128
    fn = [0.0] * 128
    kn[0] = int((dn / q) * m1)
    wn[0] = q / m1
    wn[127] = dn / m1
    fn[0] = 1.0
    fn[127] = math.exp(-0.5 * dn * dn)
    for i in range(126, 0, -1):
        dn = math.sqrt(-2.0 * math.log(_NORM_V / dn + math.exp(-0.5 * dn * dn)))
        kn[i + 1] = int((dn / tn) * m1)
        tn = dn
        fn[i] = math.exp(-0.5 * dn * dn)
        wn[i] = dn / m1
    return kn, [_f32(w) for w in wn], [_f32(f) for f in fn]


def _exp_tables() -> tuple[list[int], list[float], list[float]]:
    m2 = 2.0**32
    de = te = _EXP_R
    q = _EXP_V / math.exp(-de)
    ke = [0] * 256
    we = [0.0] * 256
    fe = [0.0] * 256
    ke[0] = int((de / q) * m2)
    we[0] = q / m2
    we[255] = de / m2
    fe[0] = 1.0
    fe[255] = math.exp(-de)
    for i in range(254, 0, -1):
        de = -math.log(_EXP_V / de + math.exp(-de))
        ke[i + 1] = int((de / te) * m2)
        te = de
        fe[i] = math.exp(-de)
        we[i] = de / m2
    return ke, [_f32(w) for w in we], [_f32(f) for f in fe]


_KN, _WN, _FN = _normal_tables()
_KE, _WE, _FE = _exp_tables()


_LN2_HI = 6.93147180369123816490e-01
_LN2_LO = 1.90821492927058770002e-10
_LG = (
    6.666666666666735130e-01,
    3.999999999940941908e-01,
    2.857142874366239149e-01,
    2.222219843214978396e-01,
    1.818357216161805012e-01,
    1.531383769920937332e-01,
    1.479819860511658591e-01,
)


def go_log(x: float) -> float:
    """The natural logarithm as Go's ``math.Log`` computes it, for 0 < x < inf (fdlibm's ``e_log.c``
    reduction and polynomial): it differs from the C library's in the last bit now and then, and the
    ziggurat's tails take it."""
    f1, ki = math.frexp(x)
    if f1 < math.sqrt(2) / 2:
        f1 *= 2
        ki -= 1
    f = f1 - 1
    k = float(ki)
    s = f / (2 + f)
    s2 = s * s
    s4 = s2 * s2
    l1, l2, l3, l4, l5, l6, l7 = _LG
    t1 = s2 * (l1 + s4 * (l3 + s4 * (l5 + s4 * l7)))
    t2 = s4 * (l2 + s4 * (l4 + s4 * l6))
    r = t1 + t2
    hfsq = 0.5 * f * f
    return k * _LN2_HI - ((hfsq - (s * (hfsq + r) + k * _LN2_LO)) - f)


class GoRand:
    """``rand.New(rand.NewPCG(seed1, seed2))`` of Go's ``math/rand/v2``: the draws MIGBench takes."""

    __slots__ = ("state",)

    def __init__(self, seed1: int, seed2: int) -> None:
        self.state = ((seed1 & _MASK64) << 64) | (seed2 & _MASK64)

    def uint64(self) -> int:
        self.state = (self.state * _MULTIPLIER + _INCREMENT) & _MASK128
        hi = self.state >> 64
        lo = self.state & _MASK64
        hi ^= hi >> 32
        hi = (hi * _CHEAP_MULTIPLIER) & _MASK64
        hi ^= hi >> 48
        return (hi * (lo | 1)) & _MASK64

    def float64(self) -> float:
        return (self.uint64() & ((1 << 53) - 1)) / float(1 << 53)

    def norm_float64(self) -> float:
        while True:
            u = self.uint64()
            j = u & 0xFFFFFFFF
            if j >= 1 << 31:
                j -= 1 << 32  # the low 32 bits as a signed integer
            i = (u >> 32) & 0x7F
            x = j * _WN[i]
            if abs(j) < _KN[i]:
                return x
            if i == 0:
                while True:
                    x = -go_log(self.float64()) * (1.0 / _NORM_R)
                    y = -go_log(self.float64())
                    if y + y >= x * x:
                        break
                return _NORM_R + x if j > 0 else -_NORM_R - x
            if _f32(_FN[i] + _f32(_f32(self.float64()) * _f32(_FN[i - 1] - _FN[i]))) < _f32(math.exp(-0.5 * x * x)):
                return x

    def exp_float64(self) -> float:
        while True:
            u = self.uint64()
            j = u & 0xFFFFFFFF
            i = (u >> 32) & 0xFF
            x = j * _WE[i]
            if j < _KE[i]:
                return x
            if i == 0:
                return _EXP_R - go_log(self.float64())
            if _f32(_FE[i] + _f32(_f32(self.float64()) * _f32(_FE[i - 1] - _FE[i]))) < _f32(math.exp(-x)):
                return x
