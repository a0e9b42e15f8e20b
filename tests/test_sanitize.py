"""safe_text: what strangers name comes out as one printable line, and nothing else changes."""

import pytest

from castwall.sanitize import MAX_NAME, safe_text


@pytest.mark.parametrize("raw, shown", [
    ("Living Room TV", "Living Room TV"),
    ("a  b\t\tc", "a b c"),  # a run of whitespace is one space
    ("a\nb\r\nc", "a b c"),  # so are line ends: one line
    ("a\u2028b\u2029c\u0085d", "a b c d"),  # Unicode's line and paragraph separators, and NEL
    ("  padded  ", "padded"),
    ("\x1b[31mred", "\\x1b[31mred"),  # a terminal escape is shown, not obeyed
    ("a\x00b\x7fc\x9bd", "a\\x00b\\x7fc\\x9bd"),  # C0, DEL, C1
    ("soft\xadhyphen", "soft\\xadhyphen"),  # a format character below U+0100
    ("\u202eevil", "\\u202eevil"),  # a bidi override
    ("a\ud800b", "a\\ud800b"),  # a lone surrogate
    ("a\ue000b", "a\\ue000b"),  # a private-use character
    ("a\U000e0001b", "a\\ue0001b"),  # a tag character (format)
    ("a\u0378b", "a\\u0378b"),  # unassigned
    ("Ā and ÿ and ü", "Ā and ÿ and ü"),  # letters around U+0100 stay as they are
    (b"caf\xc3\xa9 \xff", "café \\xff"),  # bytes: UTF-8, and what is not UTF-8 shown escaped
    (42, "42"),
])
def test_safe_text_escapes_controls_and_folds_whitespace(raw, shown):
    assert safe_text(raw) == shown


def test_a_long_name_is_shortened_to_the_limit_with_an_ellipsis():
    assert safe_text("x" * MAX_NAME) == "x" * MAX_NAME  # exactly the limit: kept whole
    assert safe_text("x" * (MAX_NAME + 1)) == "x" * (MAX_NAME - 1) + "\u2026"
    assert safe_text("abcdef", limit=4) == "abc\u2026"
    assert safe_text("ab   cdef", limit=4) == "ab\u2026"  # folded to "ab cdef"; no space left before the ellipsis
    assert len(safe_text("y" * 1000)) == MAX_NAME
