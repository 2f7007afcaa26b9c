"""Inkstand: a self-hosted server for Writer's chat completion API on llama.cpp."""

__version__ = "0.1.0"
