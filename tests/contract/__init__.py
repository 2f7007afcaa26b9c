"""Writer's API contract, in the repository: its OpenAPI document and the code that reads it.

`openapi.py` turns the document into JSON Schema validators (with the nulls Writer's guide
shows allowed); `fuzz.py` generates requests from it with schemathesis and judges responses.
The tests that use them live in `tests/api/test_contract.py` (in-process, fake backend) and
`tests/e2e/test_contract.py` / `tests/e2e/test_schema.py` (the real server).
"""
