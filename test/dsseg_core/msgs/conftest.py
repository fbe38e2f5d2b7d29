"""Fixtures of the msgs tests; the message factories live in ``msg_factories.py``."""

from __future__ import annotations

import pytest
from msg_factories import FLAVORS, make_msg


@pytest.fixture(params=FLAVORS)
def flavor(request) -> str:
    """Every test using it runs once per message flavour."""
    return request.param


@pytest.fixture
def msg_factory():
    return make_msg
