"""Writer's built-in tools, run by the server around a normal generation (never inside the
engine): `graph.py` (Knowledge Graph retrieval with cited sources, `subqueries.py`,
`citations.py`), `delegate.py` (the `llm` tool), `translate.py` (the `translation` tool and
`/v1/translation`). `chat/builtin.py` plans them; `vision` and `web_search` get a 400 "not
available" from `chat/output.py`."""
