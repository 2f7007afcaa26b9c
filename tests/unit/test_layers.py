"""Imports flow one way (docs/architecture.md): the gateway and the store never reach up into
the HTTP layer or the chat service; the engine never into schemas or the API."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "inkstand"

FORBIDDEN = {
    "gateway": ("inkstand.api", "inkstand.chat", "inkstand.schemas"),
    "store": ("inkstand.api", "inkstand.chat", "inkstand.schemas", "inkstand.gateway"),
    "engine": ("inkstand.api", "inkstand.schemas", "inkstand.gateway", "inkstand.store"),
}


def imported(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("layer", list(FORBIDDEN))
def test_layer_imports_nothing_above_it(layer):
    files = sorted((PACKAGE / layer).rglob("*.py"))
    assert files
    for path in files:
        bad = [m for m in imported(path) if m.startswith(FORBIDDEN[layer])]
        assert not bad, f"{path.relative_to(PACKAGE)} imports {bad}"
