#!/usr/bin/env bash
# Writer's raw HTTP example, pointed at Inkstand through WRITER_BASE_URL.
set -euo pipefail
curl --silent --show-error --fail-with-body "${WRITER_BASE_URL:-http://127.0.0.1:8000}/v1/chat" \
  -H "Authorization: Bearer $WRITER_API_KEY" \
  -H "Content-Type: application/json" \
  -d '{
        "model": "palmyra-x5",
        "messages": [{"role": "user", "content": "Write a haiku about ink."}]
      }'
