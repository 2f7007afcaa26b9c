"""Shared fixtures of the unit tests: engines on the scripted backend, closed afterwards."""

import pytest

from inkstand.engine import Engine, EngineConfig


@pytest.fixture
def make_engine():
    """`make_engine(backend, **config)`: a started `Engine` over `backend`."""
    engines = []

    def make(backend, **config):
        engine = Engine(backend, config=EngineConfig(**config))
        engine.start()
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        engine.close()
