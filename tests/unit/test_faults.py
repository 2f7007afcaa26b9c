"""The fault injection the engine's failure tests (and `--fault-injection`) rely on."""

import pytest

from inkstand.backends.fake import FakeBackend
from inkstand.backends.faults import Faults, FaultyBackend, InjectedFault
from inkstand.engine import SamplingParams


def test_a_spec_names_each_call_that_fails():
    faults = Faults.parse("sample@2,sample@3,decode@1")
    faults.check("sample")
    for _ in range(2):
        with pytest.raises(InjectedFault, match="sample"):
            faults.check("sample")
    faults.check("sample")
    with pytest.raises(InjectedFault, match="decode"):
        faults.check("decode")
    faults.check("decode")
    assert faults.raised == 3


@pytest.mark.parametrize("spec", ["sample", "sample@0", "sample@x", "tokenize@1"])
def test_a_bad_spec_is_refused(spec):
    with pytest.raises(ValueError, match="bad fault"):
        Faults.parse(spec)


def test_the_wrapped_backend_fails_only_the_calls_armed():
    faults = Faults()
    backend = FaultyBackend(FakeBackend("ab", n_seq_max=2), faults)
    faults.arm("begin", when=lambda slot, *_: slot == 1)
    backend.begin(0, SamplingParams(), 0)
    with pytest.raises(InjectedFault):
        backend.begin(1, SamplingParams(), 0)
    assert backend.tokenize("hi") == list(b"hi") and backend.n_seq_max == 2
