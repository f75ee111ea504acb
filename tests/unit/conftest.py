"""Unit tests run in one process: a test that builds a real LogSetup (a master made in-process, for
one) rewires the named loggers, so each test gets them back as it found them. Without this, the
``forkserve`` logger stops propagating and a later test's ``caplog`` sees nothing."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from forkserve.common.logs import LOGGER_NAMES


@pytest.fixture(autouse=True)
def named_loggers_restored() -> Iterator[None]:
    loggers = [logging.getLogger(name) for name in (*LOGGER_NAMES, "forkserve.access")]
    saved = [(logger, logger.propagate, logger.level, list(logger.handlers)) for logger in loggers]
    yield
    for logger, propagate, level, handlers in saved:
        logger.propagate = propagate
        logger.setLevel(level)
        logger.handlers[:] = handlers
