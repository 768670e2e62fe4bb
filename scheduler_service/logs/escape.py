"""Log lines that user text cannot forge.

Task names, descriptions, errors and notification texts come from users, models and
tools, and end up in log messages. A newline in a task name would start what looks like a
new log line ("2026-01-01 INFO scheduler_service: task approved by admin"); other control
characters can rewrite a terminal. So every record logged by this package has the
control characters of its message escaped (``\\n`` becomes the two characters ``\\n``)
before any handler formats it: a filter on each of the package's loggers, installed when
the package is imported and again when a service is built (for modules imported later).
"""

from __future__ import annotations

import logging
import unicodedata

PACKAGE = "scheduler_service"
_ESCAPES = {0x0A: "\\n", 0x0D: "\\r", 0x09: "\\t"}


def _escape_char(char: str) -> str:
    code = ord(char)
    if code in _ESCAPES:
        return _ESCAPES[code]
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


# Bidirectional embeddings, overrides and isolates: they reorder the text after them on
# screen, so a row can be made to read as something else ("Trojan Source").
BIDI_CONTROLS = frozenset(chr(c) for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A)))


def is_control(char: str) -> bool:
    """Whether ``char`` can change how a terminal shows what follows it."""
    # Cc: C0/C1 controls (newline, ESC, NEL, CSI ...); Zl/Zp: line and paragraph separators.
    return unicodedata.category(char) in ("Cc", "Zl", "Zp") or char in BIDI_CONTROLS


def escape(text: str) -> str:
    """``text`` with every control character (line/paragraph separators and bidi
    controls included) escaped."""
    if text.isprintable():
        return text
    return "".join(_escape_char(c) if is_control(c) else c for c in text)


def escape_json(text: str) -> str:
    """JSON text with the control characters ``json.dumps(ensure_ascii=False)`` leaves
    raw (C1 controls, separators, bidi controls) written as ``\\uXXXX`` escapes. They
    can only occur inside strings, so the result is the same JSON value; the newlines
    of the indentation stay."""
    if text.isprintable():
        return text
    return "".join(f"\\u{ord(c):04x}" if c != "\n" and is_control(c) else c for c in text)


class EscapeControls(logging.Filter):
    """Escapes the control characters of a record's message (once per record)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "controls_escaped", False):
            return True
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: the handler reports it as usual
            return True
        escaped = escape(message)
        if escaped != message:
            record.msg, record.args = escaped, None
        record.controls_escaped = True
        return True


_FILTER = EscapeControls()


def install() -> None:
    """Put the filter on the package's logger and every one of its child loggers (a
    logger's filters do not apply to its children's records)."""
    loggers = [logging.getLogger(PACKAGE)]
    for name, logger in list(logging.Logger.manager.loggerDict.items()):
        if name.startswith(PACKAGE + ".") and isinstance(logger, logging.Logger):
            loggers.append(logger)
    for logger in loggers:
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
