"""The official MCP Python SDK against taskrunner's MCP server, over both of
its transports: stdio (the SDK spawns `taskrunner mcp`) and streamable HTTP
(`/mcp` on `taskrunner serve`). On each, the tools are listed, an echo task
is created and waited for until it SUCCEEDED with the prompt as its result,
the other tools answer, and bad input comes back as a tool error
(`isError: true`) with a code.

    python mcp_check.py --binary target/debug/taskrunner \
        --database-url postgres://… --url http://127.0.0.1:PORT/mcp
"""

import argparse
import asyncio
import json
import os
import sys
import time

from mcp import Client, StdioServerParameters

TOOLS = {
    "create_task",
    "get_task",
    "list_tasks",
    "cancel_task",
    "retry_task",
    "wait_for_task",
    "list_models",
    "task_stats",
}
# The id of no task: a valid id that matches nothing.
MISSING_ID = "9223372036854775807"
DEADLINE_SECONDS = 60


class CheckFailed(Exception):
    """A check that did not hold; the message says what was seen."""


def check(condition, message):
    if not condition:
        raise CheckFailed(message)


def structured(result):
    """A tool result's structured content (a JSON object), else its text as JSON."""
    if isinstance(result.structured_content, dict):
        return result.structured_content
    for block in result.content:
        text = getattr(block, "text", None)
        if text is not None:
            try:
                value = json.loads(text)
            except ValueError:
                continue
            if isinstance(value, dict):
                return value
    return {}


def task_in(result):
    """The task a tool answered with, whether bare or under `task`."""
    value = structured(result)
    return value.get("task", value) if isinstance(value.get("task"), dict) else value


async def call(client, tool, arguments):
    result = await client.call_tool(tool, arguments)
    check(not result.is_error, f"{tool} {arguments} failed: {result.content}")
    return result


async def tool_error(client, tool, arguments, code):
    result = await client.call_tool(tool, arguments)
    value = structured(result)
    check(result.is_error, f"{tool} {arguments} is a tool error, not {value}")
    check(
        value.get("code") == code or value.get("error", {}).get("code") == code,
        f"{tool} {arguments} has code {code}: {value} {result.content}",
    )


async def exercise(client, transport):
    listed = await client.list_tools()
    names = {tool.name for tool in listed.tools}
    check(TOOLS <= names, f"{transport}: tools missing: {sorted(TOOLS - names)}")
    for tool in listed.tools:
        check(tool.description, f"{transport}: {tool.name} has a description")
        check(tool.input_schema.get("type") == "object", f"{tool.name} takes an object")

    models = structured(await call(client, "list_models", {}))
    check("echo" in json.dumps(models), f"list_models names echo: {models}")

    prompt = f"hello over {transport} at {time.time()}"
    created = task_in(await call(client, "create_task", {"prompt": prompt, "model": "echo", "priority": 7}))
    check(created.get("id"), f"create_task returns the task: {created}")
    task_id = str(created["id"])
    waited = task_in(await call(client, "wait_for_task", {"id": task_id, "timeout_seconds": 30}))
    check(waited.get("status") == "SUCCEEDED", f"wait_for_task ends SUCCEEDED: {waited}")
    check(waited.get("result") == prompt, f"the echo model answers the prompt: {waited}")

    got = task_in(await call(client, "get_task", {"id": task_id}))
    check(got.get("prompt") == prompt and got.get("priority") == 7, f"get_task: {got}")
    listed_tasks = structured(await call(client, "list_tasks", {"model": "echo", "first": 100}))
    check(task_id in json.dumps(listed_tasks), f"list_tasks holds {task_id}: {listed_tasks}")
    stats = structured(await call(client, "task_stats", {}))
    check(stats.get("succeeded", 0) >= 1, f"task_stats counts it: {stats}")

    await tool_error(client, "get_task", {"id": MISSING_ID}, "NOT_FOUND")
    await tool_error(client, "create_task", {"prompt": "", "model": "echo"}, "BAD_USER_INPUT")
    await tool_error(client, "cancel_task", {"id": task_id}, "CONFLICT")
    print(f"ok: MCP over {transport}: {len(names)} tools; task {task_id} SUCCEEDED; coded tool errors")


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--binary", required=True)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--url", required=True, help="the streamable HTTP endpoint")
    args = parser.parse_args()

    stdio = StdioServerParameters(
        command=args.binary,
        args=["mcp"],
        env={"DATABASE_URL": args.database_url, "RUST_LOG": "warn"},
        cwd=os.getcwd(),
    )
    async with Client(stdio, read_timeout_seconds=DEADLINE_SECONDS) as client:
        await exercise(client, "stdio")
    async with Client(args.url, read_timeout_seconds=DEADLINE_SECONDS) as client:
        await exercise(client, "streamable HTTP")


if __name__ == "__main__":
    try:
        asyncio.run(asyncio.wait_for(main(), timeout=2 * DEADLINE_SECONDS))
    except CheckFailed as failed:
        print(f"FAILED: {failed}", file=sys.stderr)
        sys.exit(1)
