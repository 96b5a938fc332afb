"""Checks Chat Completions request bodies against the official OpenAI SDK's request types.

Reads a JSON list of request bodies on stdin; exits 0 when every body validates, 1 with the reason
otherwise. As in check_anthropic_request.py, every lazily validated iterable is consumed, so a wrong
item deep inside a message really fails.
"""

import json
import sys
from collections.abc import Iterable, Mapping

import pydantic
from openai.types.chat.completion_create_params import CompletionCreateParamsNonStreaming


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
    bodies = json.load(sys.stdin)
    adapter = pydantic.TypeAdapter(CompletionCreateParamsNonStreaming)
    for index, body in enumerate(bodies):
        try:
            consume(adapter.validate_python(body, strict=True))
        except pydantic.ValidationError as error:
            print(f"body {index} does not conform to CompletionCreateParamsNonStreaming:\n{str(error)[:3000]}")
            return 1
    print(f"{len(bodies)} request bodies conform")
    return 0


if __name__ == "__main__":
    sys.exit(main())
