"""Backends: the model runtimes the engine drives (embedded llama.cpp, and a fake for tests)."""
