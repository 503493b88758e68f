"""Warnings raised while a subject is processed, kept for the report's warnings section."""

from __future__ import annotations

import logging
import warnings
from collections import Counter
from contextlib import contextmanager


class _ListHandler(logging.Handler):
    def __init__(self, records: list[str]):
        super().__init__(level=logging.WARNING)
        self.records = records

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(f"{record.levelname.lower()}: {record.getMessage()}")


@contextmanager
def collect_warnings(logger_name: str = "llmfbn"):
    """Collect what goes wrong inside the ``with`` block without hiding it.

    Yields a list that, when the block ends, holds one line per distinct Python warning
    (``"UserWarning: ..."``, with ``(n times)`` when repeated) and per WARNING or ERROR
    record of the ``logger_name`` logger. Python warnings are still shown as usual.
    """
    messages: list[str] = []
    logger = logging.getLogger(logger_name)
    handler = _ListHandler(messages)
    logger.addHandler(handler)
    show = warnings.showwarning
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield messages
    finally:
        logger.removeHandler(handler)
        counts = Counter(f"{w.category.__name__}: {w.message}" for w in caught)
        first = {f"{w.category.__name__}: {w.message}": w for w in caught}
        for text, n in counts.items():
            messages.append(text + (f" ({n} times)" if n > 1 else ""))
            w = first[text]
            show(w.message, w.category, w.filename, w.lineno)
