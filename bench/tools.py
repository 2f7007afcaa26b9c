"""Tool calling and structured output on the embedded model: validity, choice, overhead.

    .venv/bin/python bench/tools.py [--threads 1] [--rounds 5]

Starts one `inkstand serve` (SmolLM2-135M-Instruct, `--threads`, 2048 tokens of context)
and measures, through `POST /v1/chat`:

1. validity  every labelled prompt of tool_cases.NEEDS with its function named in
             `tool_choice`, and with `required` over three offered functions, each greedy
             and at temperature 0.8: every call must parse as JSON and validate against its
             function's schema (`jsonschema`), and the turn must end with `tool_calls`.
             Floor: 100 %.
2. json      every prompt of tool_cases.JSON_PROMPTS with its schema as `response_format`
             (greedy and 0.8): the content must parse and validate. Floor: 100 %.
3. auto      `tool_choice: auto`, greedy, over prompts that need a tool and prompts that do
             not: how often the model calls the right function, and how often it abstains.
             Recorded, no floor.
4. overhead  decode tokens/s of a streamed answer constrained by a JSON Schema vs an
             unconstrained answer of the same length (`max_tokens`, both cut by it),
             interleaved rounds, medians. Floor: constrained / unconstrained >= 0.8.
5. delegation the `llm` tool over tool_cases.CHAT (greedy and 0.8): the prompt-writing
             request the server makes (`tools/delegate.py prompt_request`, its JSON Schema)
             must give valid JSON with a non-empty prompt (floor: 100 %); and the overhead:
             time to the first token of a streamed delegation minus the delegate's own
             time to first token for the prompt the server wrote, p50 (no floor).

Results go to stdout and bench/results/tools-<UTC time>.json.
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
from clients import stream_writer
from jsonschema import Draft202012Validator
from servers import free_port, serving
from tool_cases import CHAT, FUNCTIONS, JSON_PROMPTS, NEEDS, SCHEMAS

from inkstand.schemas.chat import ChatRequest, LLMTool
from inkstand.tools.delegate import prompt_request, read_prompt

MODEL = "palmyra-x5"
CTX_SIZE = 2048
RESULTS = Path(__file__).parent / "results"
TEMPERATURES = (0.0, 0.8)
STAGES = ("validity", "json", "auto", "overhead", "delegation")


def post(http: httpx.Client, body: dict) -> dict:
    response = http.post("/v1/chat", json={"model": MODEL, **body})
    response.raise_for_status()
    return response.json()["choices"][0]


def others(name: str, count: int = 2) -> list[str]:
    names = sorted(FUNCTIONS)
    start = names.index(name)
    return [names[(start + i) % len(names)] for i in range(1, count + 1)]


def check_calls(choice: dict, offered: list[str]) -> str | None:
    """None if the turn is valid tool calls to offered functions, else what is wrong."""
    if choice["finish_reason"] != "tool_calls":
        return f"finish_reason {choice['finish_reason']}"
    for call in choice["message"]["tool_calls"] or []:
        name = call["function"]["name"]
        if name not in offered:
            return f"called {name}"
        schema = FUNCTIONS[name]["function"].get("parameters") or {"type": "object"}
        problem = check_json(call["function"]["arguments"], schema)
        if problem:
            return f"{name}: {problem}"
    return None


def check_json(text: str, schema: dict) -> str | None:
    try:
        value = json.loads(text)
    except ValueError as exc:
        return f"not JSON ({exc}): {text[:80]!r}"
    errors = [e.message for e in Draft202012Validator(schema).iter_errors(value)]
    return "; ".join(errors)[:200] or None


def validity(http: httpx.Client) -> dict:
    cases, failures = 0, []
    for prompt, name in NEEDS:
        for temperature in TEMPERATURES:
            for mode in ("named", "required"):
                offered = [name] if mode == "named" else [name, *others(name)]
                choice = {"type": "function", "function": {"name": name}}
                body = {
                    "messages": [{"role": "user", "content": prompt}],
                    "tools": [FUNCTIONS[n] for n in offered],
                    "tool_choice": choice if mode == "named" else "required",
                    "temperature": temperature,
                    "max_tokens": 256,
                }
                problem = check_calls(post(http, body), offered)
                cases += 1
                if problem:
                    failures.append(
                        {"prompt": prompt, "mode": mode, "t": temperature, "why": problem}
                    )
    return {"cases": cases, "valid": cases - len(failures), "failures": failures}


def json_validity(http: httpx.Client) -> dict:
    cases, failures = 0, []
    for prompt, schema_name in JSON_PROMPTS:
        for temperature in TEMPERATURES:
            schema = SCHEMAS[schema_name]
            body = {
                "messages": [{"role": "user", "content": prompt}],
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": schema_name, "schema": schema, "strict": True},
                },
                "temperature": temperature,
                "max_tokens": 384,
            }
            choice = post(http, body)
            problem = check_json(choice["message"]["content"], schema)
            if choice["finish_reason"] != "stop":
                problem = f"finish_reason {choice['finish_reason']}"
            cases += 1
            if problem:
                failures.append({"prompt": prompt, "t": temperature, "why": problem})
    return {"cases": cases, "valid": cases - len(failures), "failures": failures}


def auto_choice(http: httpx.Client) -> dict:
    called_right = called_wrong = 0
    for prompt, name in NEEDS:
        offered = [name, *others(name)]
        choice = post(http, auto_body(prompt, offered))
        calls = choice["message"]["tool_calls"] or []
        if calls and check_calls(choice, offered) is None:
            called_right += calls[0]["function"]["name"] == name
            called_wrong += calls[0]["function"]["name"] != name
    abstained = 0
    for i, prompt in enumerate(CHAT):
        offered = sorted(FUNCTIONS)[i % len(FUNCTIONS) :][:3] or sorted(FUNCTIONS)[:3]
        abstained += not post(http, auto_body(prompt, offered))["message"]["tool_calls"]
    return {
        "need_tool": len(NEEDS),
        "called_right_function": called_right,
        "called_other_function": called_wrong,
        "no_tool_needed": len(CHAT),
        "abstained": abstained,
    }


def auto_body(prompt: str, offered: list[str]) -> dict:
    return {
        "messages": [{"role": "user", "content": prompt}],
        "tools": [FUNCTIONS[n] for n in offered],
        "tool_choice": "auto",
        "temperature": 0,
        "max_tokens": 96,
    }


LONG_JSON = {"type": "array", "items": {"type": "string", "maxLength": 40}, "minItems": 200}
ESSAY = [{"role": "user", "content": "Write a very long essay about the history of printing."}]
LIST = [{"role": "user", "content": "List as many English words as you can, as a JSON array."}]


def overhead(http: httpx.Client, base_url: str, key: str, rounds: int, tokens: int) -> dict:
    plain = {"model": MODEL, "messages": ESSAY, "max_tokens": tokens, "temperature": 0}
    constrained = {
        "model": MODEL,
        "messages": LIST,
        "max_tokens": tokens,
        "temperature": 0,
        "response_format": {"type": "json_schema", "json_schema": {"schema": LONG_JSON}},
    }
    runs: dict[str, list[float]] = {"unconstrained": [], "constrained": []}
    for body in (plain, constrained):  # warm-up
        stream_writer(http, base_url, key, body)
    for _ in range(rounds):
        for name, body in (("unconstrained", plain), ("constrained", constrained)):
            sample = stream_writer(http, base_url, key, body)
            assert sample.finish_reason == "length" and sample.tokens == tokens, sample
            runs[name].append(sample.decode_tps)
    medians = {name: statistics.median(values) for name, values in runs.items()}
    return {
        "tokens": tokens,
        "rounds": rounds,
        "decode_tps": medians,
        "samples": runs,
        "ratio": medians["constrained"] / medians["unconstrained"],
    }


def delegation(http: httpx.Client, base_url: str, key: str) -> dict:
    """Stage 5: the delegate's prompts valid, and what delegating adds before its first token."""
    tool = LLMTool.model_validate(
        {"type": "llm", "function": {"model": "palmyra-x4", "description": "A helpful expert"}}
    )
    cases, valid, failures, added = 0, 0, [], []
    for temperature in TEMPERATURES:
        for prompt in CHAT:
            asked = ChatRequest.model_validate(
                {
                    "model": MODEL,
                    "messages": [{"role": "user", "content": prompt}],
                    "temperature": temperature,
                }  # fmt: skip
            )
            writing = prompt_request(asked, tool, "palmyra-x4").model_dump(exclude_none=True)
            writing["max_tokens"] = min(writing["max_tokens"], CTX_SIZE // 2)  # as `ask` holds it
            text = post(http, writing)["message"]["content"]
            cases += 1
            written = read_prompt(text)
            if written is None:
                failures.append({"prompt": prompt, "temperature": temperature, "reply": text})
                continue
            valid += 1
            if temperature == 0.0:
                added.append(delegation_overhead(http, base_url, key, prompt, written))
    return {
        "cases": cases,
        "valid": valid,
        "failures": failures,
        "added_ttft_p50_ms": round(statistics.median(added) * 1000, 1),
        "added_ttft_ms": [round(a * 1000, 1) for a in added],
    }


def delegation_overhead(
    http: httpx.Client, base_url: str, key: str, prompt: str, written: str
) -> float:
    """A streamed delegation's time to first token less the delegate's own for `written`."""
    tool = {"type": "llm", "function": {"model": "palmyra-x4", "description": "A helpful expert"}}
    messages = [{"role": "user", "content": prompt}]
    delegated = {"model": MODEL, "messages": messages, "tools": [tool], "max_tokens": 8,
                 "temperature": 0}  # fmt: skip
    direct = {"model": "palmyra-x4", "messages": [{"role": "user", "content": written}],
              "max_tokens": 8, "temperature": 0}  # fmt: skip
    through = stream_writer(http, base_url, key, delegated)
    alone = stream_writer(http, base_url, key, direct)
    return through.ttft_s - alone.ttft_s


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES))
    args = parser.parse_args()
    key, port = secrets.token_hex(8), free_port()
    with tempfile.TemporaryDirectory() as data:
        cmd = [
            str(Path(sys.executable).parent / "inkstand"),
            *("serve", "--port", str(port), f"--api-key={key}", "--data-dir", data),
            *("--threads", str(args.threads), "--ctx-size", str(CTX_SIZE)),
        ]
        log = Path(data) / "server.log"
        with (
            serving("inkstand", cmd, port, ready_path="/health", log=log) as server,
            httpx.Client(
                base_url=server.base_url,
                headers={"Authorization": f"Bearer {key}"},
                timeout=120,
                trust_env=False,
            ) as http,
        ):
            started = time.time()
            stages = {
                "validity": lambda: validity(http),
                "json": lambda: json_validity(http),
                "auto": lambda: auto_choice(http),
                "overhead": lambda: overhead(http, server.base_url, key, args.rounds, args.tokens),
                "delegation": lambda: delegation(http, server.base_url, key),
            }
            results: dict = {name: stages[name]() for name in args.stages}
            results["seconds"] = round(time.time() - started, 1)
    report(results, args)
    return 0


def report(results: dict, args: argparse.Namespace) -> None:
    for name in args.stages:
        REPORTS[name](results[name])
    print(f"({results['seconds']} s, --threads {args.threads})")
    RESULTS.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    path = RESULTS / f"tools-{stamp}.json"
    path.write_text(json.dumps({"args": vars(args), **results}, indent=2))
    print(f"results: {path}")


def report_validity(v: dict) -> None:
    print(f"tool-call validity  {v['valid']}/{v['cases']}  (floor 100 %)")
    for failure in v["failures"]:
        print("   ", failure)


def report_json(j: dict) -> None:
    print(f"json_schema validity {j['valid']}/{j['cases']}  (floor 100 %)")
    for failure in j["failures"]:
        print("   ", failure)


def report_auto(a: dict) -> None:
    print(
        f"auto: called the right function {a['called_right_function']}/{a['need_tool']} "
        f"(another: {a['called_other_function']}), abstained {a['abstained']}/{a['no_tool_needed']}"
    )


def report_overhead(o: dict) -> None:
    tps = o["decode_tps"]
    print(
        f"overhead: constrained {tps['constrained']:.1f} vs unconstrained "
        f"{tps['unconstrained']:.1f} decode tok/s over {o['tokens']} tokens -> "
        f"{o['ratio']:.2f} (floor 0.80)"
    )


def report_delegation(d: dict) -> None:
    print(
        f"delegation prompts valid JSON, non-empty {d['valid']}/{d['cases']} (floor 100 %); "
        f"added time to first token p50 {d['added_ttft_p50_ms']} ms"
    )
    for failure in d["failures"]:
        print("   ", failure)


REPORTS = {
    "validity": report_validity,
    "json": report_json,
    "auto": report_auto,
    "overhead": report_overhead,
    "delegation": report_delegation,
}

if __name__ == "__main__":
    sys.exit(main())
