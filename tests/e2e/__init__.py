"""End-to-end tests: the real `inkstand serve` process, driven by the official SDK and httpx."""
