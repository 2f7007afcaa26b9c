"""What the concurrency benchmark asks: distinct prompts of one length, and scripted chats.

Every prompt is new to every server (a running serial number right after the system
prompt), so a prefix cache can only reuse the chat template's shared opening, as it would
for distinct users; all prompts render to the same number of tokens give or take the topic
(65 or 66 with the embedded model's template, 28 of them its shared opening), and all ask
for a long essay so that greedy decoding runs to `max_tokens`. Conversations resend the whole
history every turn, with the answer the server itself gave, as Writer's chatbot does.
"""

from __future__ import annotations

import itertools

TOPICS = (
    "the printing press", "the steam engine", "the telescope", "the compass",
    "the railway", "the telegraph", "the bicycle", "the piano",
    "the microscope", "the calendar", "the lighthouse", "the windmill",
    "the postal service", "the public library", "the sewing machine", "the typewriter",
)  # fmt: skip

TURNS = (
    "I would like to learn about {topic}. Give me a detailed overview of its history.",
    "Tell me more about its most important period.",
    "Who were the key people involved, and what did each of them do?",
    "What are the most common misconceptions about it?",
    "How did it change the daily life of ordinary people?",
    "Which parts of that story are still debated by historians?",
    "What is its state today, and what might come next?",
    "Summarise everything we discussed in a few paragraphs.",
)


class Prompts:
    """Hands out distinct single-message chats; the serial number makes each one new."""

    def __init__(self, start: int = 1000) -> None:
        self._serial = itertools.count(start)

    def batch(self, size: int) -> list[list[dict]]:
        """`size` chats, client i on topic i, all with fresh serial numbers."""
        return [self.essay(TOPICS[i % len(TOPICS)]) for i in range(size)]

    def essay(self, topic: str) -> list[dict]:
        text = (
            f"Request {next(self._serial)}. Write a long, detailed essay about the history of "
            f"{topic}, from its origins to the present day. Cover at least ten distinct periods."
        )
        return [{"role": "user", "content": text}]

    def question(self, i: int) -> list[dict]:
        """A short question, for the many small requests of the memory test."""
        text = f"Question {next(self._serial)}: what is {TOPICS[i % len(TOPICS)]} for?"
        return [{"role": "user", "content": text}]


def opening(topic: str) -> dict:
    return {"role": "user", "content": TURNS[0].format(topic=topic)}


def follow_up(turn: int) -> dict:
    """The user message of turn `turn` (1-based, 2 and later)."""
    return {"role": "user", "content": TURNS[turn - 1]}
