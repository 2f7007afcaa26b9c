-- Semantic search: one embedding per chunk, under the name of the model that made it
-- (knowledge/embedding.py); float32 little-endian, L2-normalised. A chunk embedded again
-- by another model replaces its vector. No foreign keys (the store does not turn them on):
-- a trigger deletes a chunk's vector with the chunk, on every path that deletes chunks.
CREATE TABLE chunk_vectors (
    chunk_id  INTEGER PRIMARY KEY,          -- chunks.id
    model     TEXT NOT NULL,
    vector    BLOB NOT NULL
);
CREATE TRIGGER chunk_vectors_delete AFTER DELETE ON chunks BEGIN
    DELETE FROM chunk_vectors WHERE chunk_id = old.id;
END;

-- Counts every change to `chunk_vectors`, so a reader's in-memory copy of the vectors
-- (knowledge/semantic.py) knows when it is stale, whichever connection made the change.
CREATE TABLE vector_generation (
    id  INTEGER PRIMARY KEY CHECK (id = 1),
    n   INTEGER NOT NULL
);
INSERT INTO vector_generation VALUES (1, 0);
CREATE TRIGGER vector_generation_insert AFTER INSERT ON chunk_vectors BEGIN
    UPDATE vector_generation SET n = n + 1;
END;
CREATE TRIGGER vector_generation_update AFTER UPDATE ON chunk_vectors BEGIN
    UPDATE vector_generation SET n = n + 1;
END;
CREATE TRIGGER vector_generation_delete AFTER DELETE ON chunk_vectors BEGIN
    UPDATE vector_generation SET n = n + 1;
END;
