-- Knowledge Graphs: uploaded files, graphs, which files each graph holds, the files' chunks
-- and their full-text index. Rows are deleted by the code (files before their chunks);
-- `seq` orders pages for Writer's cursor pagination (newest first by default).
CREATE TABLE files (
    seq         INTEGER PRIMARY KEY,
    id          TEXT NOT NULL UNIQUE,        -- UUID, as Writer's
    name        TEXT NOT NULL,               -- the upload's file name, without path parts
    type        TEXT NOT NULL,               -- pdf, docx, pptx, xlsx, csv, txt, md, html, eml, srt, json ...
    bytes       INTEGER NOT NULL,
    sha256      TEXT NOT NULL,               -- its bytes under <data dir>/files/<sha256>
    status      TEXT NOT NULL,               -- in_progress | completed | failed
    error       TEXT,                        -- why it failed, for a person to act on
    created_at  TEXT NOT NULL                -- ISO 8601 UTC
);
CREATE INDEX files_status ON files (status);
CREATE INDEX files_sha256 ON files (sha256);

CREATE TABLE graphs (
    seq          INTEGER PRIMARY KEY,
    id           TEXT NOT NULL UNIQUE,
    name         TEXT NOT NULL DEFAULT '',
    description  TEXT,
    created_at   TEXT NOT NULL
);

CREATE TABLE graph_files (
    graph_id  TEXT NOT NULL,
    file_id   TEXT NOT NULL,
    added_at  TEXT NOT NULL,
    PRIMARY KEY (graph_id, file_id)
);
CREATE INDEX graph_files_file ON graph_files (file_id);

CREATE TABLE chunks (
    id       INTEGER PRIMARY KEY,
    file_id  TEXT NOT NULL,
    ord      INTEGER NOT NULL,               -- its place in the file
    text     TEXT NOT NULL,
    page     INTEGER,                        -- 1-based page or slide, when the format has them
    start    INTEGER NOT NULL,               -- character offsets in the file's extracted text
    "end"    INTEGER NOT NULL
);
CREATE INDEX chunks_file ON chunks (file_id, ord);

CREATE VIRTUAL TABLE chunks_fts USING fts5(
    text, content='chunks', content_rowid='id', tokenize='porter unicode61 remove_diacritics 2'
);
CREATE TRIGGER chunks_fts_insert AFTER INSERT ON chunks BEGIN
    INSERT INTO chunks_fts (rowid, text) VALUES (new.id, new.text);
END;
CREATE TRIGGER chunks_fts_delete AFTER DELETE ON chunks BEGIN
    INSERT INTO chunks_fts (chunks_fts, rowid, text) VALUES ('delete', old.id, old.text);
END;
