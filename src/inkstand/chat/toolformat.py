"""How tools meet the model: the tool prompt, replayed calls and results, the call grammar.

One format so far, the Hermes style that Qwen2.5 and Hermes models are trained on, and
that a small model follows well enough when shown it:

    <tool_call>
    {"name": "get_weather", "arguments": {"city": "Paris"}}
    </tool_call>

A chat template that already renders tools in this format (it mentions `<tool_call>`) gets
the tools and the replayed calls as template variables; any other template gets the generic
prompt below in its system message, and calls and results replayed as plain text.
Model-specific formats would be further `ToolFormat`s chosen by `tool_format()`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from inkstand.chat.grammar import GrammarBuilder, literal
from inkstand.chat.toolparser import CLOSE, OPEN
from inkstand.jsonvalues import json_values_over


@dataclass(frozen=True)
class Function:
    """A function tool the client offers, in our words."""

    name: str
    description: str | None
    parameters: dict[str, Any] | None

    def spec(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name}
        if self.description:
            out["description"] = self.description
        out["parameters"] = self.parameters or {"type": "object", "properties": {}}
        return out


@dataclass(frozen=True)
class ReplayedCall:
    """A call from an assistant message in the history."""

    name: str
    arguments: str


class HermesFormat:
    trigger = OPEN

    @staticmethod
    def native(template: str | None) -> bool:
        """Whether the chat template renders tools itself, in this format."""
        return template is not None and OPEN in template and "tools" in template

    def instructions(self, functions: list[Function], forced: str | None) -> str:
        """The generic tool prompt, for the system message."""
        listing = "\n".join(json.dumps(f.spec(), ensure_ascii=False) for f in functions)
        if forced == "required":
            rule = "You must call at least one function now."
        elif forced:
            rule = f"You must call the function `{forced}` now."
        else:
            rule = (
                "Call a function only when it helps answer the user; otherwise answer "
                "normally, without any tool call."
            )
        return (
            "You can call these functions (one JSON description per line):\n"
            f"{listing}\n\n"
            "To call a function, write exactly:\n"
            f'{OPEN}\n{{"name": "<function name>", "arguments": <arguments as a JSON object>}}\n'
            f"{CLOSE}\n"
            f"For several calls, write one {OPEN} block per call. {rule}"
        )

    def calls_text(self, calls: list[ReplayedCall]) -> str:
        return "".join(
            f'{OPEN}\n{{"name": {json.dumps(c.name, ensure_ascii=False)}, '
            f'"arguments": {_arguments_json(c.arguments)}}}\n{CLOSE}'
            for c in calls
        )

    def result_text(self, name: str | None, content: str) -> str:
        body = {"name": name, "content": content} if name else {"content": content}
        return f"<tool_response>\n{json.dumps(body, ensure_ascii=False)}\n</tool_response>"

    def add_calls(
        self, builder: GrammarBuilder, functions: list[Function], *, several: bool
    ) -> str:
        """Rules for one call (or one or more) to one of `functions`, arguments valid
        against their `parameters`; returns the rule's name."""
        names = []
        for i, function in enumerate(functions):
            where = f"`parameters` of function `{function.name}`"
            arguments = builder.add(function.parameters or _NO_PARAMETERS, where)
            head = literal(f'"{_json_string_body(function.name)}", "arguments": ')
            builder.rule(f"call-{i}", f"{head} {arguments}")
            names.append(f"call-{i}")
        opening, closing = literal(f'{OPEN}\n{{"name": '), literal(f"}}\n{CLOSE}")
        builder.rule("tool-call", f"{opening} ({' | '.join(names)}) {closing}")
        builder.rule("tool-calls", "tool-call+" if several else "tool-call")
        return "tool-calls"


MAX_ARGUMENT_VALUES = 10_000
_NO_PARAMETERS: dict[str, Any] = {"type": "object", "properties": {}}


def _json_string_body(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)[1:-1]


def _arguments_json(arguments: str) -> str:
    """Replayed arguments as JSON: as sent when they parse, else as a JSON string."""
    return json.dumps(arguments_value(arguments), ensure_ascii=False)


def arguments_value(arguments: str) -> Any:
    """Replayed arguments parsed, or the string itself when they do not parse or hold more
    than `MAX_ARGUMENT_VALUES` values (they are text in the body, which the body's value
    limit does not see; parsing millions of them would hold the event loop for seconds)."""
    if json_values_over(arguments.encode(), MAX_ARGUMENT_VALUES) is not None:
        return arguments
    try:
        return json.loads(arguments)
    except ValueError:
        return arguments


def tool_format(template: str | None) -> HermesFormat:
    return HermesFormat()
