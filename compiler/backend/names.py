"""Safe names from untrusted text (ONNX node and tensor names) for C++ identifiers and path components.

Everything the backend writes into C++ or onto disk passes through here. Invariants:

* `identifier(text)` is a valid C++ identifier: ``[A-Za-z_][A-Za-z0-9_]*``, never a C++ keyword or a name
  reserved to the implementation (leading underscore + capital, double underscore), never a name hls4ml or our
  kernels use for their own variables, at most `MAX_LEN` characters;
* `path_component(text)` is a single directory entry: only ``[A-Za-z0-9_.-]``, never empty, never ``.`` or
  ``..`` and never starting with ``.`` or ``-`` (so it cannot be hidden, climb out of its parent or look like
  an option), at most `MAX_LEN` characters;
* `Namer` hands out names unique within one scope (case-insensitively, since file systems may fold case);
  the same text always gets the same name in one `Namer`.
"""

from __future__ import annotations

import hashlib
import re

MAX_LEN = 48

CPP_KEYWORDS = frozenset("""
alignas alignof and and_eq asm atomic_cancel atomic_commit atomic_noexcept auto bitand bitor bool break case
catch char char8_t char16_t char32_t class compl concept const consteval constexpr constinit const_cast continue
co_await co_return co_yield decltype default delete do double dynamic_cast else enum explicit export extern
false float for friend goto if inline int long mutable namespace new noexcept not not_eq nullptr operator or
or_eq private protected public reflexpr register reinterpret_cast requires return short signed sizeof static
static_assert static_cast struct switch synchronized template this thread_local throw true try typedef typeid
typename union unsigned using virtual void volatile wchar_t while xor xor_eq final override import module
main std nnet ff ap_int ap_uint ap_fixed ap_ufixed hls input output result config NULL assert
""".split())

_NOT_IDENT = re.compile(r"[^A-Za-z0-9_]+")
_NOT_PATH = re.compile(r"[^A-Za-z0-9_.-]+")


def _digest(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()[:6]


def identifier(text: str, prefix: str = "n") -> str:
    """A C++ identifier derived from ``text`` (readable where possible)."""
    body = _NOT_IDENT.sub("_", str(text)).strip("_")
    body = re.sub(r"__+", "_", body)
    if not body or body[0].isdigit() or body in CPP_KEYWORDS or body.lower() in CPP_KEYWORDS:
        body = f"{prefix}_{body}" if body else prefix
    if len(body) > MAX_LEN:
        body = f"{body[:MAX_LEN - 7].rstrip('_')}_{_digest(str(text))}"
    return body


def path_component(text: str, prefix: str = "k") -> str:
    """One safe directory-entry name derived from ``text``."""
    body = _NOT_PATH.sub("_", str(text))
    body = re.sub(r"\.\.+", "_", body).strip("._-")
    if not body:
        body = prefix
    if body[0] in ".-":
        body = f"{prefix}{body}"
    if len(body) > MAX_LEN:
        body = f"{body[:MAX_LEN - 7].rstrip('._-')}_{_digest(str(text))}"
    return body


class Namer:
    """Unique names within one scope: ``Namer().ident(text)`` / ``.path(text)``."""

    def __init__(self, reserved: tuple[str, ...] = ()):
        self._given: dict[tuple[str, str], str] = {}
        self._taken: set[str] = {r.lower() for r in reserved}

    def _unique(self, kind: str, text: str, base: str) -> str:
        key = (kind, text)
        if key in self._given:
            return self._given[key]
        name, n = base, 1
        while name.lower() in self._taken:
            n += 1
            name = f"{base}_{n}"
        self._taken.add(name.lower())
        self._given[key] = name
        return name

    def ident(self, text: str, prefix: str = "n") -> str:
        return self._unique("ident", text, identifier(text, prefix))

    def path(self, text: str, prefix: str = "k") -> str:
        return self._unique("path", text, path_component(text, prefix))
