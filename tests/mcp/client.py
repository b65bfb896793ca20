"""Drives Quarry's MCP endpoint with the official MCP Python SDK (PyPI `mcp`).

Run by tests/tests/e2e/mcp.rs with the interpreter dev/mcp.sh installs:

    python tests/mcp/client.py --url http://127.0.0.1:PORT/mcp \
        --token JWT --narrow-token JWT_WITH_ONLY_ASK --artworks N

Checks, failing (exit status 1, the reason on stderr) at the first that does
not hold:

- raw HTTP: no token -> 401 with `WWW-Authenticate: Bearer resource_metadata=…`
  (no error code); a bad token -> 401 with `error="invalid_token"`; the
  metadata document the challenge names is served and names the endpoint;
- with the token: `tools/list` lists exactly ask, query_database,
  search_documents, get_summaries and explain_sql, each with an object input
  schema; each tool is called and answers; a bad argument is a tool error
  naming the field; `ask` sends progress notifications as the answer forms
  and returns the answer with its citation;
- with the narrow token (scope `ask` only): only `ask` is listed, and
  `query_database` and `explain_sql`, called anyway, are tool errors saying
  which scope is missing.

Prints a JSON report of what it saw on stdout (the Rust test asserts on it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
from typing import Any

import httpx2
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

EXPECTED_TOOLS = {"ask", "query_database", "search_documents", "get_summaries", "explain_sql"}
COUNT_SQL = "SELECT count(*) AS artworks FROM tate.artworks"
GOLDEN_QUESTION = "How many artworks are in the Tate collection?"


class CheckFailed(Exception):
    pass


def check(condition: bool, what: str) -> None:
    if not condition:
        raise CheckFailed(what)


def text_of(result: Any) -> str:
    return "\n".join(block.text for block in result.content if getattr(block, "type", "") == "text")


INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "raw", "version": "0"},
    },
}


async def raw_http(url: str, report: dict[str, Any]) -> None:
    """The OAuth resource-server behaviour, seen with a plain HTTP client."""
    headers = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
    async with httpx2.AsyncClient() as http:
        response = await http.post(url, headers=headers, json=INITIALIZE)
        check(response.status_code == 401, f"no token: status {response.status_code}, want 401")
        challenge = response.headers.get("www-authenticate", "")
        match = re.fullmatch(r'Bearer resource_metadata="([^"]+)"', challenge)
        check(match is not None, f"no token: WWW-Authenticate {challenge!r}")
        report["challenge_without_token"] = challenge

        response = await http.post(
            url, headers={**headers, "authorization": "Bearer not.a.jwt"}, json=INITIALIZE
        )
        check(response.status_code == 401, f"bad token: status {response.status_code}, want 401")
        bad = response.headers.get("www-authenticate", "")
        check('error="invalid_token"' in bad, f"bad token: WWW-Authenticate {bad!r}")
        check("resource_metadata=" in bad, f"bad token: WWW-Authenticate {bad!r}")
        report["challenge_with_bad_token"] = bad

        metadata_url = match.group(1)
        response = await http.get(metadata_url)
        check(response.status_code == 200, f"metadata {metadata_url}: status {response.status_code}")
        document = response.json()
        check(document.get("resource") == url, f"metadata resource {document.get('resource')!r}, want {url!r}")
        check("header" in document.get("bearer_methods_supported", []), f"metadata {document}")
        report["metadata"] = document


async def with_session(url: str, token: str, body, report: dict[str, Any]) -> Any:
    http = create_mcp_http_client(headers={"authorization": f"Bearer {token}"})
    async with http:
        async with streamable_http_client(url, http_client=http) as (read, write):
            async with ClientSession(read, write) as session:
                initialized = await session.initialize()
                report["protocol_version"] = str(initialized.protocol_version)
                report["server"] = f"{initialized.server_info.name} {initialized.server_info.version}"
                return await body(session)


async def full_access(url: str, token: str, artworks: int, report: dict[str, Any]) -> None:
    async def body(session: ClientSession) -> None:
        listed = await session.list_tools()
        names = sorted(tool.name for tool in listed.tools)
        report["tools"] = names
        check(set(names) == EXPECTED_TOOLS, f"tools listed {names}, want {sorted(EXPECTED_TOOLS)}")
        for tool in listed.tools:
            schema = tool.input_schema
            check(isinstance(schema, dict) and schema.get("type") == "object", f"{tool.name}: input schema {schema}")
            check(bool(schema.get("properties")), f"{tool.name}: no properties in {schema}")
            check(bool(tool.description), f"{tool.name}: no description")
        report["schemas"] = {tool.name: tool.input_schema for tool in listed.tools}
        calls: dict[str, Any] = {}

        result = await session.call_tool("query_database", {"sql": COUNT_SQL})
        text = text_of(result)
        check(not result.is_error, f"query_database failed: {text}")
        check(str(artworks) in text, f"query_database: {artworks} not in {text!r}")
        calls["query_database"] = text

        result = await session.call_tool("search_documents", {"collection": "artworks", "query": "watercolour", "k": 3})
        text = text_of(result)
        check(not result.is_error, f"search_documents failed: {text}")
        check("<tool_result" in text, f"search_documents: {text!r}")
        calls["search_documents"] = text

        result = await session.call_tool("get_summaries", {"kind": "decade", "limit": 2})
        text = text_of(result)
        check(not result.is_error, f"get_summaries failed: {text}")
        calls["get_summaries"] = text

        result = await session.call_tool("explain_sql", {"sql": COUNT_SQL})
        text = text_of(result)
        check(not result.is_error, f"explain_sql failed: {text}")
        check("estimated cost" in text, f"explain_sql: {text!r}")
        calls["explain_sql"] = text

        # a bad argument: a tool error naming the field, not a protocol error
        result = await session.call_tool("search_documents", {"collection": "artworks", "query": "x", "k": 0})
        text = text_of(result)
        check(bool(result.is_error), f"k = 0 was accepted: {text}")
        check("`k`" in text, f"k = 0: the error does not name the field: {text!r}")
        calls["bad_argument"] = text

        notes: list[dict[str, Any]] = []

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            notes.append({"progress": progress, "message": message})

        result = await session.call_tool("ask", {"question": GOLDEN_QUESTION}, progress_callback=on_progress)
        text = text_of(result)
        check(not result.is_error, f"ask failed: {text}")
        check(str(artworks) in text, f"ask: {artworks} not in {text!r}")
        structured = result.structured_content or {}
        check(len(structured.get("citations", [])) == 1, f"ask: citations {structured}")
        check(structured.get("status") == "ANSWER_STATUS_ANSWERED", f"ask: status {structured}")
        check(len(notes) >= 5, f"ask: {len(notes)} progress notifications: {notes}")
        messages = [n["message"] or "" for n in notes]
        check(any(m.startswith("route:") for m in messages), f"ask: no route progress in {messages}")
        check(any(m.startswith("calling query_database") for m in messages), f"ask: no tool call progress in {messages}")
        check(any(m.startswith("answer:") for m in messages), f"ask: no answer progress in {messages}")
        check([n["progress"] for n in notes] == sorted(n["progress"] for n in notes), f"ask: progress not increasing {notes}")
        calls["ask"] = {"text": text, "structured": structured}
        report["progress"] = notes
        report["calls"] = calls

    await with_session(url, token, body, report)


async def narrow(url: str, token: str, report: dict[str, Any]) -> None:
    async def body(session: ClientSession) -> None:
        listed = sorted(tool.name for tool in (await session.list_tools()).tools)
        check(listed == ["ask"], f"an ask-only token is listed {listed}")
        report["narrow_tools"] = listed
        refusals: dict[str, str] = {}
        for name, arguments, scope in [
            ("query_database", {"sql": COUNT_SQL}, "sql:query"),
            ("explain_sql", {"sql": COUNT_SQL}, "sql:explain"),
        ]:
            result = await session.call_tool(name, arguments)
            text = text_of(result)
            check(bool(result.is_error), f"{name} without {scope} was not refused: {text}")
            check(f"missing scope {scope}" in text, f"{name}: the refusal does not name {scope}: {text!r}")
            refusals[name] = text
        report["refusals"] = refusals

    await with_session(url, token, body, report)


async def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--narrow-token", required=True)
    parser.add_argument("--artworks", type=int, required=True)
    args = parser.parse_args()
    report: dict[str, Any] = {}
    try:
        await raw_http(args.url, report)
        await full_access(args.url, args.token, args.artworks, report)
        await narrow(args.url, args.narrow_token, report)
    except CheckFailed as failed:
        print(f"check failed: {failed}", file=sys.stderr)
        print(json.dumps(report, indent=1, default=str), file=sys.stderr)
        return 1
    print(json.dumps(report, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
