"""Values from the user, checked once at the command line's edge, and names made safe to print.

Numbers: every numeric option of every command goes through `number` (or `count` / `id_list`) before any work
starts. A value outside its range is a `UserError` naming the option, the value and the accepted range, e.g.
``--timeout must be a finite number > 0 (seconds), got nan``. Rules: NaN and ±inf are never accepted; integers
are whole numbers (``True`` is not one); ranges are closed unless ``low_open`` / ``high_open``.

Inputs (model inputs from ``--inputs`` / ``--calib`` / ``--samples``): `check_samples` applies the runtime's
own rule (host.engine.check_feed: integer inputs take integer arrays within the vocabulary, float inputs take
finite real arrays) to arrays of N >= 1 samples.

Names shown on the terminal: `shown` escapes rich markup (``[/]`` in a layer name or path would be parsed as a
tag, or crash the printer) and writes control characters (ANSI escape sequences in ONNX node names, newlines,
bidi overrides) as visible escapes (``\\x1b``), so a model file cannot drive the user's terminal.
"""

from __future__ import annotations

import math
from numbers import Integral, Real

import numpy as np

from .errors import UserError


def _range_text(low, high, low_open: bool, high_open: bool) -> str:
    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    if low is not None:
        return f"{'>' if low_open else '>='} {low:g}"
    if high is not None:
        return f"{'<' if high_open else '<='} {high:g}"
    return "finite"


def number(value, flag: str, *, low: float | None = None, high: float | None = None, low_open: bool = False,
           high_open: bool = False, integer: bool = False, unit: str = "", optional: bool = True):
    """``value`` if it is a finite number (a whole one with ``integer``) within the bounds, else a UserError.
    None passes when ``optional`` (an option left at its default of "none")."""
    if value is None and optional:
        return None
    kind = "an integer" if integer else "a finite number"
    what = f"{flag} must be {kind} {_range_text(low, high, low_open, high_open)}" + (f" ({unit})" if unit else "")
    if isinstance(value, bool) or not isinstance(value, Integral if integer else Real):
        raise UserError(f"{what}, got {value!r}.")
    if not isinstance(value, Integral) and not math.isfinite(value):
        raise UserError(f"{what}, got {value}.")
    if (low is not None and (value <= low if low_open else value < low)) or \
            (high is not None and (value >= high if high_open else value > high)):
        raise UserError(f"{what}, got {value if isinstance(value, Integral) else format(value, 'g')}.")
    return int(value) if integer else value


def count(value, flag: str, minimum: int = 1, what: str = ""):
    """A whole number >= ``minimum`` (None passes)."""
    return number(value, flag, low=minimum, integer=True, unit=what)


def positive(value, flag: str, unit: str = ""):
    """A finite number > 0 (None passes): timeouts, clocks, tolerances."""
    return number(value, flag, low=0, low_open=True, unit=unit)


def id_list(text: str | None, flag: str) -> list[int]:
    """Comma-separated integers (``"3, 5,7"``); empty items are skipped. Range checks are the runtime's."""
    if not text:
        return []
    items = [x.strip() for x in str(text).split(",") if x.strip()]
    try:
        return [int(x) for x in items]
    except ValueError:
        bad = next(x for x in items if not x.lstrip("+-").isdigit())
        raise UserError(f"{flag} must be comma-separated integers (token ids such as 3,17,42), got {bad!r} in "
                        f"{text!r}.") from None


def check_samples(data: dict[str, np.ndarray], graph, source) -> int:
    """Check model-input arrays of N samples each (N >= 1) with the runtime's rule; returns N."""
    from ..host.engine import check_feed, id_limits

    limits = id_limits(graph)
    n = None
    for name in graph.inputs:
        a = data[name]
        if a.shape[0] == 0:
            raise UserError(f"{source}: array {name!r} holds no samples (shape {a.shape}); give at least one "
                            "input per model input.")
        try:
            check_feed(name, a, graph.tensors[name].dtype, limits.get(name))
        except ValueError as e:
            raise UserError(f"{source}: {e}") from None
        n = a.shape[0]
    return int(n or 0)


def shown(text) -> str:
    """``text`` safe for a rich console: markup escaped, control characters written as visible escapes."""
    from rich.markup import escape

    return escape(plain(text))


def plain(text) -> str:
    """``text`` with every non-printable character (ANSI escapes, newlines, bidi overrides) as ``\\xNN``/``\\uNNNN``."""
    text = "" if text is None else str(text)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)
