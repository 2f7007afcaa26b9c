"""Shared fixtures of the unit tests: engines on the scripted backend, closed afterwards."""

import pytest

from inkstand.engine import Engine, EngineConfig


@pytest.fixture
def make_engine():
    """`make_engine(backend, cost=None, draft=None, **config)`: a started `Engine` over
    `backend` (with `draft` as its draft model's backend).
    Speculation is off unless asked for (`speculate="auto"`, best with a known `cost`)."""
    engines = []

    def make(backend, cost=None, draft=None, **config):
        engine = Engine(backend, config=EngineConfig(**config), cost=cost, draft=draft)
        engine.start()
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        engine.close()
