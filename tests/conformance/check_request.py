"""Checks request bodies against an official SDK's request types.

Usage: check_request.py anthropic|openai. Reads a JSON list of request bodies on stdin (Messages
API bodies for anthropic, Chat Completions bodies for openai); exits 0 when every body validates, 1
with the reason otherwise. The SDKs' TypedDicts declare most lists as Iterable, which pydantic
validates lazily, so every nested iterable is consumed here: a wrong block deep inside a message
really fails.
"""

import importlib
import json
import sys
from collections.abc import Iterable, Mapping

import pydantic

# Each SDK's module and the type of a non-streaming request's parameters.
REQUEST_TYPES = {
    "anthropic": ("anthropic.types.message_create_params", "MessageCreateParamsNonStreaming"),
    "openai": ("openai.types.chat.completion_create_params", "CompletionCreateParamsNonStreaming"),
}


def consume(value):
    """Walks the validated value, forcing pydantic's lazy iterators to validate their items."""
    if isinstance(value, (str, bytes)):
        return value
    if isinstance(value, Mapping):
        return {key: consume(item) for key, item in value.items()}
    if isinstance(value, Iterable):
        return [consume(item) for item in value]
    return value


def main() -> int:
    if len(sys.argv) != 2 or sys.argv[1] not in REQUEST_TYPES:
        print(f"usage: {sys.argv[0]} {'|'.join(REQUEST_TYPES)}", file=sys.stderr)
        return 2
    module, name = REQUEST_TYPES[sys.argv[1]]
    request_type = getattr(importlib.import_module(module), name)
    bodies = json.load(sys.stdin)
    adapter = pydantic.TypeAdapter(request_type)
    for index, body in enumerate(bodies):
        try:
            consume(adapter.validate_python(body, strict=True))
        except pydantic.ValidationError as error:
            print(f"body {index} does not conform to {name}:\n{str(error)[:3000]}")
            return 1
    print(f"{len(bodies)} request bodies conform")
    return 0


if __name__ == "__main__":
    sys.exit(main())
