"""An upstream MCP server for Tollgate's tests, built on the official MCP Python SDK.

Serves Streamable HTTP (session style) at http://127.0.0.1:PORT/mcp with a fixed tool set per
--name, pages tools/list by --page-size, and refuses (401) any request whose bearer token is not
--token, so a test fails if the gateway forwards the engineer's virtual key instead of the
server's own credential. Every Authorization header seen, and every tool called
(`call NAME`), is appended to --seen-log.

    python upstream_server.py --name alpha --port 8931 --token sk-alpha [--page-size 2]
"""

import argparse
import json

import mcp_types as types
import uvicorn
from mcp.server.lowlevel import Server

TOOLS = {
    "alpha": {
        "read_file": "Read a file (fake: returns canned text).",
        "write_file": "Write a file (fake: writes nothing).",
        "delete_file": "Delete a file (fake: deletes nothing).",
        "list_dir": "List a directory (fake).",
    },
    "beta": {
        "add": "Add two integers.",
        "echo": "Echo the text back.",
        "shout": "Echo the text in capitals.",
        "reverse": "Reverse the text.",
        "admin_reset": "Dangerous: reset everything (fake).",
    },
}

SCHEMAS = {
    "add": {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}, "required": ["a", "b"]},
    "write_file": {
        "type": "object",
        "properties": {"path": {"type": "string"}, "content": {"type": "string"}},
        "required": ["path", "content"],
    },
}
TEXT_SCHEMA = {"type": "object", "properties": {"text": {"type": "string"}}}
PATH_SCHEMA = {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}


def tool_list(name: str) -> list[types.Tool]:
    out = []
    for tool, description in TOOLS[name].items():
        schema = SCHEMAS.get(tool) or (PATH_SCHEMA if name == "alpha" else TEXT_SCHEMA)
        out.append(types.Tool(name=tool, description=description, input_schema=schema))
    return out


def run_tool(server: str, tool: str, args: dict) -> str:
    if tool == "read_file":
        return f"CONTENT of {args.get('path')} from {server}"
    if tool == "add":
        return str(int(args.get("a", 0)) + int(args.get("b", 0)))
    if tool == "echo":
        return f"{server} echo: {args.get('text', '')}"
    if tool == "shout":
        return str(args.get("text", "")).upper()
    if tool == "reverse":
        return str(args.get("text", ""))[::-1]
    return f"{server} ran {tool} with {json.dumps(args, sort_keys=True)}"


def build(name: str, page_size: int, seen_log: str | None) -> Server:
    tools = tool_list(name)

    async def list_tools(ctx, params):
        start = int(params.cursor) if params is not None and params.cursor else 0
        page = tools[start : start + page_size]
        nxt = str(start + page_size) if start + page_size < len(tools) else None
        return types.ListToolsResult(tools=page, next_cursor=nxt)

    async def call_tool(ctx, params):
        if params.name not in TOOLS[name]:
            raise ValueError(f"unknown tool {params.name}")
        if seen_log:
            with open(seen_log, "a") as f:
                f.write(f"call {params.name}\n")
        text = run_tool(name, params.name, params.arguments or {})
        return types.CallToolResult(content=[types.TextContent(type="text", text=text)], is_error=False)

    async def list_prompts(ctx, params):
        return types.ListPromptsResult(prompts=[types.Prompt(name="summarize", description=f"{name} prompt")])

    async def list_resources(ctx, params):
        return types.ListResourcesResult(resources=[types.Resource(uri=f"file:///{name}/readme.txt", name="readme")])

    return Server(
        name,
        version="1.0",
        on_list_tools=list_tools,
        on_call_tool=call_tool,
        on_list_prompts=list_prompts,
        on_list_resources=list_resources,
    )


class RequireToken:
    """ASGI middleware: 401 unless `Authorization: Bearer <token>`."""

    def __init__(self, app, token: str, seen_log: str | None):
        self.app, self.token, self.seen_log = app, token, seen_log

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            headers = dict(scope.get("headers") or [])
            auth = headers.get(b"authorization", b"").decode()
            if self.seen_log:
                with open(self.seen_log, "a") as f:
                    f.write(auth + "\n")
            if auth != f"Bearer {self.token}":
                await send({"type": "http.response.start", "status": 401, "headers": [(b"content-type", b"text/plain")]})
                await send({"type": "http.response.body", "body": b"bad token"})
                return
        await self.app(scope, receive, send)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--name", required=True, choices=sorted(TOOLS))
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--token", required=True)
    p.add_argument("--page-size", type=int, default=100)
    p.add_argument("--seen-log")
    a = p.parse_args()
    app = build(a.name, a.page_size, a.seen_log).streamable_http_app(streamable_http_path="/mcp")
    uvicorn.run(RequireToken(app, a.token, a.seen_log), host="127.0.0.1", port=a.port, log_level="warning")


if __name__ == "__main__":
    main()
