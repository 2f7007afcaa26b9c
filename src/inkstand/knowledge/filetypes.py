"""Which uploads are accepted: a file's type comes from its name (Writer's Python SDK sends
every upload as `text/plain`), and extraction checks the content against it."""

from __future__ import annotations

from pathlib import PurePosixPath

# Text-bearing types ingestion extracts. Writer also accepts images, audio and video (for
# its vision tool); Inkstand refuses them with a 400 rather than store what it cannot read.
SUPPORTED_TYPES = (
    "txt",
    "md",
    "html",
    "pdf",
    "docx",
    "pptx",
    "xlsx",
    "csv",
    "eml",
    "srt",
    "json",
)
ALIASES = {"htm": "html", "markdown": "md", "text": "txt"}


def type_from_name(name: str) -> str | None:
    """The type named by `name`'s extension (lower case, aliases folded); None if it is not
    one Inkstand ingests."""
    suffix = PurePosixPath(name).suffix.lower().lstrip(".")
    kind = ALIASES.get(suffix, suffix)
    return kind if kind in SUPPORTED_TYPES else None
