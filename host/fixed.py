"""Fixed-point types with the exact semantics of Xilinx/hls4ml ``ap_fixed`` / ``ap_ufixed`` (numpy only).

A `FixedType(width W, integer I, signed, rounding, overflow)` is ``ap_fixed<W, I, AP_<rounding>, AP_<overflow>>``
(``ap_ufixed`` when unsigned). It has ``F = W - I`` fractional bits; F may be negative (the LSB weighs more than
1) or larger than W (every bit is fractional). A value is held as an int64 *code* c, the W-bit pattern read as
a two's-complement (signed) or plain binary (unsigned) integer:

    value = c * 2**-F,     signed: -2**(W-1) <= c <= 2**(W-1) - 1,     unsigned: 0 <= c <= 2**W - 1.

Every conversion into a type (from a float64 in `quantize`, from another type in `cast`) is, on the exact value v
of the source (no intermediate rounding anywhere; scaling by a power of two is exact):

 1. scale to the target grid: y = v * 2**F (exact);
 2. round y to an integer R = floor(y) + inc, with inc in {0, 1} chosen by the rounding mode from the discarded
    fraction f = y - floor(y) in [0, 1) and the sign of v:
        TRN          floor (towards -inf)                       inc = 0
        TRN_ZERO     towards zero                               inc = v < 0 and f > 0
        RND          half up (ties towards +inf)                inc = f >= 1/2
        RND_ZERO     ties towards zero                          inc = f > 1/2 or (f == 1/2 and v < 0)
        RND_MIN_INF  ties towards -inf                          inc = f > 1/2
        RND_INF      ties away from zero                        inc = f > 1/2 or (f == 1/2 and v >= 0)
        RND_CONV     ties to even                               inc = f > 1/2 or (f == 1/2 and floor(y) odd)
    (hls4ml's ap_types/ap_fixed_base.h: quantization_adjust, lines 367-382; the double constructor, lines
    519-634; the fixed-to-fixed assignment, lines 648-763.)
 3. overflow: R "overflows" when it lies outside [min_code, max_code] of the target; then
        WRAP         keep the low W bits of R (two's complement wrap; unsigned: R mod 2**W)
        SAT          clamp to min_code / max_code
        SAT_ZERO     the result is 0
        SAT_SYM      clamp to -max_code / max_code (signed); for unsigned types the same as SAT.
    For SAT_SYM (signed) min_code is -max_code: the bit pattern -2**(W-1) is never produced and a rounded value
    equal to it counts as an overflow. (Exception, as in ap_fixed: a 1-bit signed SAT_SYM type has max 0 and
    saturates negative values to -1, ap_fixed_base.h line 356, so there min_code = -1.)
    The `*_count` variants also return how many elements overflowed (were wrapped, saturated or zeroed), which
    the emulator records per layer.

Limits (checked, never silently wrong):
  * codes are int64: signed types up to W = 64, unsigned up to W = 63 (FixedType itself accepts any W >= 1, so
    wider types can still be described and written to manifests; converting values into them raises ValueError);
  * `quantize` works in float64 where that is exact: y = ldexp(x, F) is exact unless it overflows or underflows,
    and floor(y), floor(y) + 1/2 are exact while |y| < 2**52 (larger doubles are integers), so the rounding bits
    come from exact comparisons and R fits int64 while |y| < 2**62. The rare other elements (|y| >= 2**62, inf,
    y lost to underflow) take an exact path on the integer mantissa m * 2**e of x;
  * all integer math is int64/uint64 with shift amounts clamped where the result is known (e.g. shifting a
    53-bit mantissa right by 60 or more gives the same floor and rounding bits as any larger shift; a code
    shifted left by 64 or more has no bits left in the target), so no intermediate ever overflows;
  * arrays are converted block by block (`CHUNK` elements) to keep temporaries in cache: a Python loop per block,
    never per element;
  * NaN inputs raise ValueError (ap_fixed gives garbage for NaN); +-inf behave as in ap_fixed's double
    constructor, i.e. as +-2**1024: they overflow (WRAP gives 0);
  * subnormal float64 inputs are converted by their exact value. ap_fixed's double constructor reads a subnormal
    as 1.m * 2**-1023, which can only change the result for types with more than ~1020 fractional bits.

Invariants: `quantize` / `cast` results always lie in [min_code, max_code] except under WRAP, where they lie in
the W-bit range; `to_float(quantize(x, t), t) == x` whenever x is representable in t; quantize and cast return
arrays of the input's shape and dtype int64.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

ROUNDING_MODES = ("TRN", "TRN_ZERO", "RND", "RND_ZERO", "RND_INF", "RND_MIN_INF", "RND_CONV")
OVERFLOW_MODES = ("WRAP", "SAT", "SAT_ZERO", "SAT_SYM")
MAX_SIGNED_WIDTH = 64  # widest signed type whose codes fit int64
MAX_UNSIGNED_WIDTH = 63  # widest unsigned type whose codes fit int64
MAX_DICT_INTEGER = 512  # |integer bits| a type read from a file may have (2**-frac stays a finite float64)

__all__ = [
    "FixedType", "FixedTypeError", "ROUNDING_MODES", "OVERFLOW_MODES", "MAX_SIGNED_WIDTH", "MAX_UNSIGNED_WIDTH",
    "quantize", "quantize_count", "cast", "cast_count", "to_float",
]


class FixedTypeError(ValueError):
    """A fixed-point type read from a file (`FixedType.from_dict`) that is malformed or out of range."""


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class FixedType:
    """``ap_fixed<width, integer, AP_<rounding>, AP_<overflow>>`` (``ap_ufixed`` when ``signed`` is False)."""

    width: int
    integer: int
    signed: bool = True
    rounding: str = "TRN"
    overflow: str = "WRAP"

    def __post_init__(self) -> None:
        if not isinstance(self.width, int) or isinstance(self.width, bool) or self.width < 1:
            raise ValueError(f"FixedType width must be an integer >= 1, got {self.width!r}")
        if not isinstance(self.integer, int) or isinstance(self.integer, bool):
            raise ValueError(f"FixedType integer bits must be an integer (may be negative), got {self.integer!r}")
        if not isinstance(self.signed, bool):
            raise ValueError(f"FixedType signed must be True or False, got {self.signed!r}")
        if self.rounding not in ROUNDING_MODES:
            raise ValueError(f"FixedType rounding must be one of {', '.join(ROUNDING_MODES)}; got {self.rounding!r}")
        if self.overflow not in OVERFLOW_MODES:
            raise ValueError(f"FixedType overflow must be one of {', '.join(OVERFLOW_MODES)}; got {self.overflow!r}")

    # ---- derived quantities -------------------------------------------------------------------------------
    @property
    def frac(self) -> int:
        """Fractional bits F = width - integer (negative: LSB > 1; > width: all bits fractional)."""
        return self.width - self.integer

    @property
    def lsb(self) -> float:
        """Weight of one code step, 2**-frac."""
        return 2.0 ** -self.frac

    @property
    def max_code(self) -> int:
        return (1 << (self.width - 1)) - 1 if self.signed else (1 << self.width) - 1

    @property
    def min_code(self) -> int:
        """Smallest code a conversion can produce (-max_code for signed SAT_SYM, see the module docstring)."""
        if not self.signed:
            return 0
        if self.overflow == "SAT_SYM" and self.width > 1:
            return -self.max_code
        return -(1 << (self.width - 1))

    @property
    def max_value(self) -> float:
        return float(np.ldexp(float(self.max_code), -self.frac))

    @property
    def min_value(self) -> float:
        return float(np.ldexp(float(self.min_code), -self.frac))

    # ---- spellings ----------------------------------------------------------------------------------------
    def to_hls(self) -> str:
        """C++ type name, e.g. ``ap_fixed<16,6>`` or ``ap_ufixed<8,2,AP_RND,AP_SAT>``."""
        args = [str(self.width), str(self.integer)]
        if self.rounding != "TRN" or self.overflow != "WRAP":
            args.append("AP_" + self.rounding)
        if self.overflow != "WRAP":
            args.append("AP_" + self.overflow)
        return f"ap_{'' if self.signed else 'u'}fixed<{','.join(args)}>"

    _PATTERN = re.compile(r"^\s*(ap_)?(u?)(fixed|int)\s*<([^<>]*)>\s*$")

    @classmethod
    def parse(cls, text: str) -> "FixedType":
        """Inverse of `to_hls`; also reads hls4ml's spellings ``fixed<16,6,RND,SAT>``, ``ufixed<...>``,
        ``ap_int<8>`` / ``int<8>`` (an integer type is ``ap_fixed<W,W>``) and a trailing saturation-bit count 0."""
        m = cls._PATTERN.match(str(text))
        if not m:
            raise ValueError(f"cannot parse fixed-point type {text!r}: expected e.g. 'ap_fixed<16,6>', "
                             "'ap_ufixed<8,2,AP_RND,AP_SAT>' or hls4ml's 'fixed<16,6,RND,SAT>'")
        _, u, kind, body = m.groups()
        args = [a.strip() for a in body.split(",")]
        try:
            width = int(args[0])
            if kind == "int":
                if len(args) != 1:
                    raise ValueError
                return cls(width, width, not u)
            integer = int(args[1])
        except (ValueError, IndexError):
            raise ValueError(f"cannot parse fixed-point type {text!r}: width and integer bits must be integers")
        modes = [a[3:] if a.upper().startswith("AP_") else a for a in args[2:]]
        modes = [a.upper() for a in modes]
        if len(modes) == 3:
            if modes[2] != "0":
                raise ValueError(f"fixed-point type {text!r}: saturation bits other than 0 are not supported")
            modes = modes[:2]
        if len(modes) > 3:
            raise ValueError(f"cannot parse fixed-point type {text!r}: too many template arguments")
        rounding = modes[0] if len(modes) >= 1 else "TRN"
        overflow = modes[1] if len(modes) >= 2 else "WRAP"
        return cls(width, integer, not u, rounding, overflow)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form for manifests (`from_dict` is the inverse)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "FixedType":
        """Inverse of `to_dict` for a dict read from a file: every field is checked (a width of 1..64 bits, the
        widest a manifest may hold; integer bits within +-MAX_DICT_INTEGER; known modes), and anything else is a
        `FixedTypeError` (a ValueError) that says what is wrong, which loaders turn into their own error."""
        if not isinstance(d, dict):
            raise FixedTypeError(f"a fixed-point type must be a JSON object with width and integer, got {d!r}")
        unknown = set(d) - {"width", "integer", "signed", "rounding", "overflow"}
        if unknown or "width" not in d or "integer" not in d:
            raise FixedTypeError(f"not a fixed-point type (needs width and integer; unknown keys "
                                 f"{sorted(map(str, unknown))}): {d!r}")
        width, integer = d["width"], d["integer"]
        signed, rounding, overflow = d.get("signed", True), d.get("rounding", "TRN"), d.get("overflow", "WRAP")
        if not _is_int(width) or not 1 <= width <= MAX_SIGNED_WIDTH:
            raise FixedTypeError(f"fixed-point width must be an integer of 1..{MAX_SIGNED_WIDTH} bits, got {width!r}")
        if not _is_int(integer) or abs(integer) > MAX_DICT_INTEGER:
            raise FixedTypeError(f"fixed-point integer bits must be an integer within +-{MAX_DICT_INTEGER}, got "
                                 f"{integer!r}")
        if not isinstance(signed, bool):
            raise FixedTypeError(f"fixed-point 'signed' must be true or false, got {signed!r}")
        if rounding not in ROUNDING_MODES:
            raise FixedTypeError(f"fixed-point rounding must be one of {', '.join(ROUNDING_MODES)}, got {rounding!r}")
        if overflow not in OVERFLOW_MODES:
            raise FixedTypeError(f"fixed-point overflow must be one of {', '.join(OVERFLOW_MODES)}, got {overflow!r}")
        return cls(width, integer, signed, rounding, overflow)

    def __str__(self) -> str:
        return self.to_hls()


# ---- conversions ------------------------------------------------------------------------------------------

def _check_codes_fit(t: FixedType, role: str) -> None:
    limit = MAX_SIGNED_WIDTH if t.signed else MAX_UNSIGNED_WIDTH
    if t.width > limit:
        raise ValueError(f"{role} type {t.to_hls()} is too wide for int64 codes: fpgaformer's numpy fixed point "
                         f"supports signed types up to {MAX_SIGNED_WIDTH} bits and unsigned up to "
                         f"{MAX_UNSIGNED_WIDTH} bits")


CHUNK = 1 << 16  # elements per block: conversions run block by block so temporaries stay in cache


def _round(rounding: str, floor: np.ndarray, qbit: np.ndarray, sticky: np.ndarray,
           negative: np.ndarray) -> np.ndarray:
    """R = floor + inc (int64), inc from the first discarded bit ``qbit`` (f >= 1/2), ``sticky`` (any later
    discarded bit set: f not in {0, 1/2}) and the sign of the source. Mirrors ap_fixed_base::quantization_adjust
    (ap_fixed_base.h lines 367-381)."""
    if rounding == "TRN":
        return floor
    if rounding == "TRN_ZERO":
        inc = negative & (qbit | sticky)
    elif rounding == "RND":
        inc = qbit
    elif rounding == "RND_ZERO":
        inc = qbit & (negative | sticky)
    elif rounding == "RND_MIN_INF":
        inc = qbit & sticky
    elif rounding == "RND_INF":
        inc = qbit & (~negative | sticky)
    else:  # RND_CONV
        inc = qbit & ((floor & 1).astype(bool) | sticky)
    return floor + inc


def _wrap(bits: np.ndarray, t: FixedType) -> np.ndarray:
    """Low ``t.width`` bits of a uint64 array, as the type's int64 code (sign-extended when signed)."""
    shift = np.uint64(64 - t.width)
    high = bits << shift
    if t.signed:
        return high.view(np.int64) >> np.int64(64 - t.width)
    return (high >> shift).view(np.int64)


def _apply_overflow(wrapped: np.ndarray, above: np.ndarray, below: np.ndarray, t: FixedType) -> np.ndarray:
    """Final codes: ``wrapped`` where in range, else per the overflow mode (above/below: R > max / R < min)."""
    if t.overflow == "WRAP":
        return wrapped
    if t.overflow == "SAT_ZERO":
        return np.where(above | below, np.int64(0), wrapped)
    return np.where(above, np.int64(t.max_code), np.where(below, np.int64(t.min_code), wrapped))


def _quantize_exact(x: np.ndarray, t: FixedType) -> tuple[np.ndarray, np.ndarray]:
    """(codes, overflowed) for any non-NaN float64 x, on the exact integer mantissa; used for the elements
    `_quantize_fast` cannot take (|x * 2**F| >= 2**62, or x * 2**F lost bits to float underflow)."""
    F = t.frac
    infinite = np.isinf(x)
    # x = m * 2**e exactly, m an integer with |m| < 2**53 (inf as ap_fixed reads it: +-2**52 * 2**972).
    mant, exp = np.frexp(np.where(infinite, 0.0, x))
    m = np.ldexp(mant, 53).astype(np.int64)
    e = exp.astype(np.int64) - 53
    m = np.where(infinite, np.where(x > 0, np.int64(1 << 52), np.int64(-(1 << 52))), m)
    e = np.where(infinite, np.int64(972), e)
    s = e + np.int64(F)  # y = x * 2**F = m * 2**s
    fractional = s < 0

    # Case s < 0: y has discarded bits. A right shift by >= 60 gives the same floor (0 or -1), first discarded
    # bit (the sign) and sticky bit (m != 0) as any larger one, because |m| < 2**53.
    k = np.where(fractional, np.minimum(-s, 60), 1)
    floor = m >> k
    qbit = ((m >> (k - 1)) & 1).astype(bool)
    sticky = (m & ((np.int64(1) << (k - 1)) - 1)) != 0
    rounded = _round(t.rounding, floor, qbit, sticky, m < 0)  # |rounded| <= 2**52 + 1

    # Case s >= 0: y = m * 2**s is an integer, possibly far beyond int64; its low 64 bits are (m << s) mod 2**64.
    with np.errstate(over="ignore"):
        exact = np.where(fractional, rounded.astype(np.float64),
                         np.ldexp(m.astype(np.float64), np.clip(s, 0, 4096).astype(np.int32)))
    shifted = m.view(np.uint64) << np.clip(s, 0, 63).astype(np.uint64)
    low_bits = np.where(fractional, rounded.view(np.uint64), np.where(s < 64, shifted, np.uint64(0)))

    # `exact` holds R exactly (or +-inf); the limits compared with are powers of two, so the tests are exact.
    lo, hi = t.min_code, t.max_code
    above = exact >= float(hi + 1)
    below = exact < float(lo) if int(float(lo)) == lo else exact <= float(lo - 1)  # lo - 1 = -2**(W-1) then
    return _apply_overflow(_wrap(low_bits, t), above, below, t), above | below


def _quantize_fast(x: np.ndarray, t: FixedType, out: np.ndarray) -> int:
    """Writes the codes of x into ``out``; returns the overflow count. Works in float64: y = x * 2**F is exact
    (ldexp), floor(y) and floor(y) + 1/2 are exact while |y| < 2**52 (beyond that every double is an integer), so
    the rounding bits come from exact comparisons. Elements with |y| >= 2**62 or whose y underflowed go to
    `_quantize_exact`."""
    F = int(np.clip(t.frac, -4000, 4000))  # beyond this every non-zero y is 0 or inf, i.e. a hard element
    with np.errstate(over="ignore", under="ignore"):
        y = np.ldexp(x, F)
    floor = np.floor(y)
    half = floor + 0.5
    magnitude = np.abs(y)
    fractional = magnitude < 2.0 ** 52
    qbit = (y >= half) & fractional
    sticky = (y != floor) & (y != half) & fractional
    hard = ~(magnitude < 2.0 ** 62) | ((y == 0) & (x != 0))
    floor_int = np.where(hard, 0.0, floor).astype(np.int64)
    rounded = _round(t.rounding, floor_int, qbit, sticky, y < 0)
    above = rounded > t.max_code
    below = rounded < t.min_code
    out[...] = _apply_overflow(_wrap(rounded.view(np.uint64), t), above, below, t)
    overflowed = above | below
    if hard.any():
        where = np.flatnonzero(hard)
        out[where], overflowed[where] = _quantize_exact(x[where], t)
    return int(np.count_nonzero(overflowed))


def quantize_count(x: Any, t: FixedType) -> tuple[np.ndarray, int]:
    """``ap_fixed<...> v = (double)x`` elementwise: (int64 codes of x's shape, number of overflowed elements)."""
    _check_codes_fit(t, "target")
    x = np.asarray(x)
    if x.dtype.kind in "iu" and x.size and (int(x.min()) < -(1 << 53) or int(x.max()) > (1 << 53)):
        raise ValueError(f"quantize to {t.to_hls()}: integer inputs beyond 2**53 are not exact as float64; "
                         "express them as codes of an integer FixedType and use cast()")
    flat = np.ascontiguousarray(x, dtype=np.float64).reshape(-1)
    if np.isnan(flat).any():
        raise ValueError(f"quantize to {t.to_hls()}: the input contains NaN, which has no fixed-point value")
    out = np.empty(flat.shape, dtype=np.int64)
    count = 0
    for start in range(0, flat.size, CHUNK):
        count += _quantize_fast(flat[start:start + CHUNK], t, out[start:start + CHUNK])
    return out.reshape(x.shape), count


def quantize(x: Any, t: FixedType) -> np.ndarray:
    """``ap_fixed<...> v = (double)x`` elementwise; int64 codes (value = code * 2**-t.frac)."""
    return quantize_count(x, t)[0]


def _cast_block(c: np.ndarray, d: int, dst: FixedType, out: np.ndarray) -> int:
    """Codes c (int64) scaled by 2**d onto dst's grid, rounded and overflowed into ``out``; returns the count."""
    lo, hi = dst.min_code, dst.max_code
    if d >= 0:
        above = c > (hi >> d)  # c * 2**d > hi  <=>  c > floor(hi / 2**d)
        below = c < -((-lo) >> d)  # c * 2**d < lo  <=>  c < ceil(lo / 2**d)
        low_bits = c.view(np.uint64) << np.uint64(d) if d < 64 else np.zeros_like(c, dtype=np.uint64)
    else:
        k = -d
        negative = c < 0
        if k >= 64:  # floor is 0 or -1; bit k-1 of the sign-extended code is the sign bit
            floor = c >> np.int64(63)
            qbit = negative
            sticky = (c & np.int64((1 << 63) - 1)) != 0 if k == 64 else c != 0
        else:
            floor = c >> np.int64(k)
            qbit = ((c >> np.int64(k - 1)) & 1).astype(bool)
            sticky = (c & np.int64((1 << (k - 1)) - 1)) != 0
        rounded = _round(dst.rounding, floor, qbit, sticky, negative)  # floor <= 2**62 - 1: no overflow
        above = rounded > hi
        below = rounded < lo
        low_bits = rounded.view(np.uint64)
    out[...] = _apply_overflow(_wrap(low_bits, dst), above, below, dst)
    return int(np.count_nonzero(above | below))


def cast_count(codes: Any, src: FixedType, dst: FixedType) -> tuple[np.ndarray, int]:
    """ap_fixed-to-ap_fixed assignment ``dst v = (src)c`` elementwise: (int64 codes, number overflowed).

    Only ``dst``'s rounding and overflow modes matter (as in C++). ``codes`` must be valid codes of ``src``
    (its full bit range, -2**(W-1) included for SAT_SYM)."""
    _check_codes_fit(src, "source")
    _check_codes_fit(dst, "target")
    c = np.asarray(codes)
    if c.dtype.kind not in "iu":
        raise ValueError(f"cast from {src.to_hls()}: codes must be an integer array, got dtype {c.dtype}")
    bit_lo = -(1 << (src.width - 1)) if src.signed else 0
    if c.size and (int(c.min()) < bit_lo or int(c.max()) > src.max_code):
        raise ValueError(f"cast from {src.to_hls()}: codes outside the source range [{bit_lo}, {src.max_code}] "
                         f"(min {int(c.min())}, max {int(c.max())})")
    flat = np.ascontiguousarray(c, dtype=np.int64).reshape(-1)
    out = np.empty(flat.shape, dtype=np.int64)
    d = dst.frac - src.frac  # R = c * 2**d, rounded when d < 0
    count = 0
    for start in range(0, flat.size, CHUNK):
        count += _cast_block(flat[start:start + CHUNK], d, dst, out[start:start + CHUNK])
    return out.reshape(c.shape), count


def cast(codes: Any, src: FixedType, dst: FixedType) -> np.ndarray:
    """ap_fixed-to-ap_fixed assignment elementwise; int64 codes of ``dst``."""
    return cast_count(codes, src, dst)[0]


def to_float(codes: Any, t: FixedType) -> np.ndarray:
    """float64 values code * 2**-frac (exact for width <= 53; else rounded to nearest even, as ap_fixed's
    to_double())."""
    return np.ldexp(np.asarray(codes, dtype=np.int64).astype(np.float64), -t.frac)
