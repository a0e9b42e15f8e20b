"""Make text that strangers control safe to print, log or store."""

import unicodedata

MAX_NAME = 64


def safe_text(value: object, limit: int = MAX_NAME) -> str:
    """Escape control and format characters, fold whitespace runs, shorten to limit.

    Announced names may hold terminal escapes, newlines, bidi overrides or
    hundreds of bytes; what comes out is one printable line.
    """
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="backslashreplace")
    text = str(value)
    out = []
    for ch in text:
        if ch.isspace():
            if out and out[-1] != " ":
                out.append(" ")
        elif unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn"):  # Zl, Zp: isspace() above
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
        else:
            out.append(ch)
    cleaned = "".join(out).strip()
    if len(cleaned) > limit:
        cleaned = cleaned[: limit - 1].rstrip() + "\u2026"
    return cleaned
