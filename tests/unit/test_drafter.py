"""The draft model (engine/drafter.py) on the scripted backend: its drafts are verified like
lookup drafts, its KV mirrors the sequence's, and nothing it does changes or fails an answer.

`ScriptedDraft` is a draft model that knows the answer except at chosen positions, where
it drafts a wrong token: the target must reject those, and the draft KV must be cut back.
"""

import pytest

from inkstand.backends.fake import EOG, FakeBackend
from inkstand.engine.drafter import DraftModel, same_vocabulary
from inkstand.engine.speculation import forced_length

from .events import collect, finishes, text_of
from .test_speculation import CHEAP_DRAFTS, DOCUMENT, drafted_batches, request

PROMPT = "Say it."
ANSWER = "Answers that copy nothing from the prompt still get drafts from a draft model."


def ask(max_tokens=200, **fields):
    return request(PROMPT, max_tokens, **fields)


class ScriptedDraft(FakeBackend):
    """Drafts the token `answer` has after the row's position (the prompt is `prompt_len`
    tokens long), except at the answer's indexes in `wrong`, where it drafts "#"."""

    def __init__(self, answer: str, prompt_len: int, wrong=(), **kwargs) -> None:
        super().__init__(answer, **kwargs)
        self.prompt_len = prompt_len
        self.wrong = set(wrong)

    def sample(self, seq_id: int, logits_index: int) -> int:
        index = self.row_positions[logits_index] + 1 - self.prompt_len
        if index in self.wrong:
            return ord("#")
        return self.reply[index] if 0 <= index < len(self.reply) else EOG


def draft_for(answer=ANSWER, wrong=(), slots=2):
    return ScriptedDraft(answer, len(PROMPT), wrong, n_seq_max=slots, n_ctx=2048)


@pytest.fixture
def pair(make_engine):
    """`pair(mode, draft)`: (engine without speculation, engine with `draft`, its backend)."""

    def make(mode, draft, answer=ANSWER, slots=2):
        plain = make_engine(FakeBackend(answer, n_seq_max=slots, n_ctx=2048))
        backend = FakeBackend(answer, n_seq_max=slots, n_ctx=2048)
        fast = make_engine(backend, cost=CHEAP_DRAFTS, draft=draft, speculate=mode)
        return plain, fast, backend

    return make


async def test_forced_drafts_are_verified_and_the_answer_is_the_same(pair):
    draft = draft_for(wrong={5, 20, 21, 40})
    plain, fast, backend = pair("draft", draft)
    without, with_ = await collect(plain, ask()), await collect(fast, ask())
    assert text_of(with_) == text_of(without) == ANSWER
    assert finishes(with_) == finishes(without)
    assert drafted_batches(backend) > 0
    steps = [b for b in backend.decode_calls if any(e.want_logits for e in b)]
    assert len(steps) < len(ANSWER) / 2  # several tokens a step, despite the wrong drafts
    slot = next(s for s, tokens in enumerate(fast._scheduler.cache.tokens) if tokens)
    assert fast._scheduler.cache.tokens[slot] == backend.kv[slot]
    held = fast.drafter.held[slot]
    assert held == draft.kv[slot]  # what the drafter thinks it holds is what it holds
    assert held[: len(PROMPT) + 20] == list((PROMPT + ANSWER).encode())[: len(PROMPT) + 20]


async def test_auto_drafts_with_the_model_where_lookup_finds_nothing(pair):
    draft = draft_for()
    plain, fast, backend = pair("auto", draft)
    calibration = len(draft.decode_calls)
    without, with_ = await collect(plain, ask()), await collect(fast, ask())
    assert text_of(with_) == text_of(without) == ANSWER
    assert len(draft.decode_calls) > calibration + 5 and drafted_batches(backend) > 5


async def test_ngram_mode_never_runs_the_draft_model(pair):
    draft = draft_for()
    plain, fast, _ = pair("ngram", draft)
    assert text_of(await collect(fast, ask())) == ANSWER
    calibration = len(draft.decode_calls)
    await collect(fast, ask())
    assert len(draft.decode_calls) == calibration


@pytest.mark.parametrize("max_tokens", [1, 9, 33])
async def test_max_tokens_and_stop_are_exact_with_model_drafts(pair, max_tokens):
    plain, fast, _ = pair("draft", draft_for())
    without = await collect(plain, ask(max_tokens, stop=("model",)))
    with_ = await collect(fast, ask(max_tokens, stop=("model",)))
    assert text_of(with_) == text_of(without)
    assert [f.completion_tokens for f in finishes(with_)] == [
        f.completion_tokens for f in finishes(without)
    ]


async def test_a_failing_draft_model_never_fails_the_answer(pair):
    draft = draft_for()
    plain, fast, backend = pair("draft", draft)
    draft.fail_decodes = 5
    assert text_of(await collect(fast, ask())) == ANSWER
    assert finishes(await collect(fast, ask()))[0].reason == "stop"


async def test_two_sequences_draft_in_one_batch_and_keep_their_own_kv(pair):
    draft = draft_for(wrong={7})
    plain, fast, backend = pair("draft", draft)
    events = await collect(fast, ask(n=2))
    assert text_of(events, 0) == text_of(events, 1) == ANSWER
    assert any(len([e for e in batch if e.want_logits]) == 2 for batch in draft.decode_calls)
    for slot in (0, 1):
        assert fast.drafter.held[slot] == draft.kv[slot]


def test_the_vocabulary_must_be_the_same():
    assert same_vocabulary(FakeBackend(), FakeBackend()) is None
    other = FakeBackend()
    other.n_vocab = 300
    assert "differ in size" in same_vocabulary(FakeBackend(), other)
    shifted = FakeBackend()
    shifted.token_bytes = lambda token: bytes([(token + 1) % 256]) if token < EOG else b""
    assert "token 0 differs" in same_vocabulary(FakeBackend(), shifted)


def test_catching_up_a_long_history_takes_several_batches():
    backend = ScriptedDraft(DOCUMENT, 0, n_seq_max=2, n_ctx=2048, n_batch=64)
    drafter = DraftModel(backend)
    history = list(DOCUMENT.encode())[:150]
    drafts = drafter.propose({0: (history, 3), 1: (history[:100], 2)})
    assert drafts == {0: tuple(DOCUMENT.encode()[150:153]), 1: tuple(DOCUMENT.encode()[100:102])}
    assert all(sum(len(e.tokens) for e in batch) <= 64 for batch in backend.decode_calls)
    assert drafter.held[0] == backend.kv[0] == history + list(DOCUMENT.encode()[150:152])


def test_forced_length_follows_the_acceptance():
    assert forced_length(0.3, 10) == 1  # one at least
    assert forced_length(0.9, 10) == 6  # 0.9 ** 6 = 0.53, 0.9 ** 7 = 0.48
    assert forced_length(0.999, 10) == 10
