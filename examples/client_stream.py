"""Stream an answer from plugway with the official openai SDK.

    PLUGWAY_API_KEY=pw_... python examples/client_stream.py "What is 12.5% of 1,840?"

Tool calls run on the gateway; the client only sees the streamed answer.
"""

from __future__ import annotations

import os
import sys

from openai import OpenAI


def main() -> None:
    client = OpenAI(
        base_url=os.environ.get("PLUGWAY_BASE_URL", "http://127.0.0.1:8080/v1"),
        api_key=os.environ["PLUGWAY_API_KEY"],
    )
    question = " ".join(sys.argv[1:]) or "What time is it in Tokyo, and what is 17 * 23?"
    stream = client.chat.completions.create(
        model=os.environ.get("PLUGWAY_MODEL", "demo"),
        messages=[{"role": "user", "content": question}],
        stream=True,
    )
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            print(chunk.choices[0].delta.content, end="", flush=True)
        if chunk.usage:
            print(f"\n[{chunk.usage.total_tokens} tokens]")


if __name__ == "__main__":
    main()
