"""Sanitised names: C++ identifiers and path components from hostile text."""

from __future__ import annotations

import re

import pytest

from fpgaformer.compiler.backend.names import CPP_KEYWORDS, MAX_LEN, Namer, identifier, path_component

HOSTILE = ["../../etc/passwd", "a b\tc", 'q"uote\'s', "class", "int", "9lives", "", "..", ".", "-rf", "__x",
           "/abs/path", "a\\b", "naïve/ünïcode", "x" * 300, "new line\n", "template<int>", "std::vector"]


@pytest.mark.parametrize("text", HOSTILE)
def test_identifier_is_a_valid_non_keyword_cpp_name(text):
    name = identifier(text)
    assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name)
    assert name not in CPP_KEYWORDS and "__" not in name and len(name) <= MAX_LEN


@pytest.mark.parametrize("text", HOSTILE)
def test_path_component_cannot_escape(text):
    name = path_component(text)
    assert re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", name)
    assert name not in (".", "..") and ".." not in name and "/" not in name and len(name) <= MAX_LEN


def test_namer_gives_unique_stable_names():
    namer = Namer(reserved=("input",))
    a, b, c = namer.ident("a b"), namer.ident("a_b"), namer.ident("A b")
    assert len({a.lower(), b.lower(), c.lower()}) == 3
    assert namer.ident("a b") == a
    assert namer.ident("input") != "input"
    long1, long2 = identifier("y" * 100 + "1"), identifier("y" * 100 + "2")
    assert long1 != long2
