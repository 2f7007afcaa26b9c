"""Reading an engine's events in the unit tests: a whole request's, one choice's text, its
finishes."""

from inkstand.engine import Finish, TokenEvent


async def collect(engine, req) -> list:
    """Every event of `req`, to the last Finish."""
    async with engine.stream(req) as events:
        return [event async for event in events]


def text_of(events, index: int = 0) -> str:
    """The text of choice `index`."""
    return "".join(e.text for e in events if isinstance(e, TokenEvent) and e.index == index)


def finishes(events) -> list[Finish]:
    """The Finish events, in choice order."""
    return sorted((e for e in events if isinstance(e, Finish)), key=lambda f: f.index)
