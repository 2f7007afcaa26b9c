"""Knowledge Graphs: files uploaded to the server, grouped in graphs, turned into chunks by a
background ingestion worker, and searched for the `graph` tool and `/v1/graphs/question`.

    filetypes.py  which files are accepted, and their type from the name
    extract.py    bytes -> a `Document` of sections (pages, headings), per format
    chunking.py   a `Document` -> chunks that keep their place (page, offsets)
    ingest.py     the worker: in-progress files -> chunks in the store, resumed after restarts
    search.py     retrieval over the chunks of some graphs (SQLite FTS5, BM25)
"""
