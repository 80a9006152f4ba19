"""Printing past pytest's output capture, for the one line a long test exists to show."""

from __future__ import annotations

import contextlib
from contextlib import AbstractContextManager
from typing import cast

import pytest


def uncaptured(request: pytest.FixtureRequest) -> AbstractContextManager[object]:
    """Print past pytest's capture (the result line shows even without -s; the log stays live with -s)."""
    capman = request.config.pluginmanager.getplugin("capturemanager")
    if capman is None:
        return contextlib.nullcontext()
    return cast(AbstractContextManager[object], capman.global_and_fixture_disabled())
