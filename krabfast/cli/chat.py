"""`krabfast chat MESSAGE`: one chat turn on a running gateway, the reply printed as it
streams (the offline model answers when no provider is configured)."""

from __future__ import annotations

import sys
import uuid

from krabfast.cli.common import add_client_args, run_client


def add_parser(sub) -> None:
    p = sub.add_parser("chat", help="send a message to a session and print the streamed reply",
                       description="Send MESSAGE with chat.send and print the assistant's reply "
                                   "as its `chat` events arrive (exit 1 on an error or abort).")
    p.add_argument("message", help="what to say")
    p.add_argument("--session", default="agent:main:main",
                   help="session key (a bare name belongs to the default agent)")
    add_client_args(p)
    p.set_defaults(func=_cmd_chat)


def _cmd_chat(args) -> int:
    run_id = f"cli-{uuid.uuid4()}"
    outcome: dict = {}

    async def body(client):
        await client.request("chat.send", {"sessionKey": args.session, "message": args.message,
                                           "idempotencyKey": run_id})
        printed = 0
        while True:
            event = await client.next_event("chat", timeout=max(args.timeout, 60.0))
            payload = event.payload if isinstance(event.payload, dict) else {}
            if payload.get("runId") != run_id:
                continue
            state = payload.get("state")
            text = _text(payload.get("message"))
            if state in ("delta", "final") and text is not None and len(text) > printed:
                if not args.json:
                    sys.stdout.write(text[printed:])
                    sys.stdout.flush()
                printed = len(text)
            if state in ("final", "error", "aborted"):
                outcome.update(payload)
                return payload

    code, _ = run_client(args, body, what="chat")
    if code:
        return code
    if args.json:
        import json

        print(json.dumps(outcome))
    else:
        print()
    if outcome.get("state") != "final":
        print(f"krabfast chat: {outcome.get('state')}: "
              f"{outcome.get('errorMessage') or outcome.get('stopReason') or ''}".rstrip(),
              file=sys.stderr)
        return 1
    return 0


def _text(message) -> str | None:
    if not isinstance(message, dict):
        return None
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return None
