"""An MCP client (the official Python SDK) that talks to Tollgate's /mcp and reports as JSON.

Reads a JSON list of steps on stdin, runs them in one MCP session, prints one JSON object
with a result per step. Steps:
  {"op": "list"}                       every tools/list page: {"pages": n, "tools": [names]}
  {"op": "call", "name": N, "args": {}} tools/call: {"text": ..., "is_error": b} or {"error": {...}}
  {"op": "prompts"} / {"op": "resources"}   names / URIs
  {"op": "wait_for", "path": P}        block until file P exists (lets the test act mid-session)

    python gateway_client.py --url http://127.0.0.1:8080/mcp --key tg_... [--mode legacy|auto]
"""

import argparse
import asyncio
import json
import os
import sys

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError


async def run(url: str, key: str, mode: str, steps: list) -> dict:
    out = []
    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=30) as http:
        transport = streamable_http_client(url, http_client=http)
        async with Client(transport, mode=mode, read_timeout_seconds=30, cache=None) as client:
            info = client.server_info
            for step in steps:
                op = step["op"]
                try:
                    if op == "list":
                        names, pages, cursor = [], 0, None
                        while True:
                            r = await client.list_tools(cursor=cursor)
                            pages += 1
                            names += [t.name for t in r.tools]
                            cursor = r.next_cursor
                            if not cursor:
                                break
                        out.append({"pages": pages, "tools": names, "meta": r.meta})
                    elif op == "call":
                        r = await client.call_tool(step["name"], step.get("args") or {})
                        text = "".join(c.text for c in r.content if getattr(c, "type", "") == "text")
                        out.append({"text": text, "is_error": bool(r.is_error)})
                    elif op == "prompts":
                        r = await client.list_prompts()
                        out.append({"prompts": [p.name for p in r.prompts]})
                    elif op == "resources":
                        r = await client.list_resources()
                        out.append({"resources": [str(x.uri) for x in r.resources]})
                    elif op == "wait_for":
                        while not os.path.exists(step["path"]):
                            await asyncio.sleep(0.05)
                        out.append({})
                    else:
                        out.append({"error": {"code": 0, "message": f"unknown op {op}"}})
                except MCPError as e:
                    out.append({"error": {"code": e.error.code, "message": e.error.message}})
    return {"server": info.name if info else None, "steps": out}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--mode", default="legacy")
    a = p.parse_args()
    steps = json.load(sys.stdin)
    print(json.dumps(asyncio.run(run(a.url, a.key, a.mode, steps)), default=str))


if __name__ == "__main__":
    main()
