"""Log noise a person takes for an error, filtered at its source and nothing else: bitsandbytes' notice, on a CPU
with AVX512-BF16 and without the optional `kernels` package, that it falls back to its own CPU 4-bit kernel."""
from __future__ import annotations

import logging

NOTICES = {"bitsandbytes.backends.cpu.ops": "Failed to load CPU gemm_4bit_forward from kernels-community"}
"""Logger -> the start of the one message dropped from it."""


class _Drop(logging.Filter):
    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)


def silence_known_notices() -> None:
    """Install the filters (before bitsandbytes is imported: the notice comes at its import). Idempotent."""
    for name, prefix in NOTICES.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _Drop) for f in logger.filters):
            logger.addFilter(_Drop(prefix))
