"""Writer's built-in tools, run by the server around a normal generation (never inside the
engine): `graph.py` (Knowledge Graph retrieval with cited sources). The others (`llm`,
`translation`, `vision`, `web_search`) get a 400 "not available yet" from `chat/output.py`."""
