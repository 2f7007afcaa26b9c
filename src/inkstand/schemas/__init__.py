"""Pydantic wire models for requests, spelled exactly as Writer's API spells them.

Responses are built as plain dicts by `inkstand.chat.chunks` (per-token speed matters) and
are checked against Writer's published OpenAPI schemas in the tests.
"""
