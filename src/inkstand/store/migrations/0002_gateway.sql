-- Gateway: per-key model scopes, rate limits and expiry; one row per request in `usage`.
ALTER TABLE api_keys ADD COLUMN models      TEXT;     -- JSON list of model ids; NULL: all
ALTER TABLE api_keys ADD COLUMN rpm         INTEGER;  -- NULL: the server's default; 0: none
ALTER TABLE api_keys ADD COLUMN tpm         INTEGER;  -- NULL: the server's default; 0: none
ALTER TABLE api_keys ADD COLUMN expires_at  TEXT;     -- ISO 8601 UTC; NULL: never

CREATE TABLE usage (
    id                 INTEGER PRIMARY KEY,
    at                 TEXT NOT NULL,     -- ISO 8601 UTC, when the response ended
    key_id             TEXT,              -- NULL: the request was not authenticated
    model              TEXT,
    endpoint           TEXT NOT NULL,
    prompt_tokens      INTEGER NOT NULL DEFAULT 0,
    cached_tokens      INTEGER NOT NULL DEFAULT 0,
    completion_tokens  INTEGER NOT NULL DEFAULT 0,
    latency_ms         REAL NOT NULL,
    status             INTEGER NOT NULL,
    finish_reason      TEXT
);
CREATE INDEX usage_at ON usage (at);
CREATE INDEX usage_key_at ON usage (key_id, at);
