"""Knowledge Graphs: files uploaded to the server, grouped in graphs, turned into chunks by a
background ingestion worker, and searched for the `graph` tool and `/v1/graphs/question`.

    filetypes.py  which files are accepted, and their type from the name
    extract.py    bytes -> a `Document` of sections (pages, headings), per format
    document.py   `Document`, `Section`, `ExtractionError`: what every format's reader shares
    text.py       the readers of txt, md, csv, srt, json, html and eml
    pdf.py        the reader of pdf
    office.py     the readers of docx, pptx and xlsx
    chunking.py   a `Document` -> chunks that keep their place (page, offsets)
    ingest.py     the worker: in-progress files -> chunks in the store, resumed after restarts
    search.py     retrieval over the chunks of some graphs (SQLite FTS5, BM25)
    embedding.py  text -> vectors: a GGUF in llama.cpp's embedding mode, or an upstream engine
    semantic.py   the chunks of some graphs nearest a question's vector (cosine, brute force)
    hybrid.py     `retrieve()`: keyword and semantic merged by `search_weight`; the tool's call
"""
