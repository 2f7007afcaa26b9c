"""Helpers shared by several test suites (real llama-server replicas, ...)."""
