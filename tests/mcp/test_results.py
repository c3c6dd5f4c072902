import base64
import json

from mcp_types import (
    AudioContent,
    BlobResourceContents,
    CallToolResult,
    EmbeddedResource,
    ImageContent,
    ResourceLink,
    TextContent,
    TextResourceContents,
)

from runtime.mcp.results import cap_text, render_result


def _text(value: str) -> TextContent:
    return TextContent(type="text", text=value)


def test_text_blocks_are_joined() -> None:
    result = CallToolResult(content=[_text("first"), _text("second")])
    assert render_result(result, 1000) == "first\nsecond"


def test_structured_content_is_preferred_as_json() -> None:
    structured = {"city": "Oslo", "temperature_c": 3.5, "tags": ["snow"]}
    result = CallToolResult(content=[_text("ignored duplicate")], structured_content=structured)
    text = render_result(result, 1000)
    assert json.loads(text) == structured
    assert "ignored duplicate" not in text


def test_wrapped_primitive_results_are_unwrapped() -> None:
    assert (
        render_result(
            CallToolResult(content=[_text("hi")], structured_content={"result": "hi"}), 100
        )
        == "hi"
    )
    assert (
        render_result(CallToolResult(content=[], structured_content={"result": [1, 2]}), 100)
        == "[1, 2]"
    )


def test_binary_content_is_summarised_not_dropped() -> None:
    png = bytes(range(256)) * 4 + b"xyz"  # 1027 bytes: exercises base64 padding
    wav = b"RIFF" + bytes(96)
    result = CallToolResult(
        content=[
            ImageContent(type="image", data=base64.b64encode(png).decode(), mime_type="image/png"),
            AudioContent(type="audio", data=base64.b64encode(wav).decode(), mime_type="audio/wav"),
            EmbeddedResource(
                type="resource",
                resource=TextResourceContents(uri="file:///notes.txt", text="note body"),
            ),
            EmbeddedResource(
                type="resource",
                resource=BlobResourceContents(
                    uri="file:///report.pdf",
                    blob=base64.b64encode(b"%PDF" * 10).decode(),
                    mime_type="application/pdf",
                ),
            ),
            ResourceLink(
                type="resource_link",
                name="invoice",
                uri="https://example.com/i/1",
                description="PDF",
            ),
        ]
    )
    lines = render_result(result, 10_000).split("\n")
    assert lines == [
        "[image: image/png, 1027 bytes]",
        "[audio: audio/wav, 100 bytes]",
        "[resource: file:///notes.txt]",
        "note body",
        "[resource: file:///report.pdf, application/pdf, 40 bytes]",
        "[resource link: invoice <https://example.com/i/1>: PDF]",
    ]


def test_empty_results_say_so() -> None:
    assert render_result(CallToolResult(content=[]), 100) == "(no output)"
    assert "error" in render_result(CallToolResult(content=[], is_error=True), 100)


def test_long_results_are_capped_with_a_notice() -> None:
    text = cap_text("z" * 5000, 300)
    assert len(text) <= 300
    assert text.startswith("z" * 200)
    assert text.endswith("of 5000 characters]")
    shown = int(text.split("showing ")[1].split(" ")[0])
    assert text.count("z") == shown
    assert cap_text("short", 300) == "short"
    capped = render_result(CallToolResult(content=[_text("q" * 10_000)]), 1000)
    assert len(capped) <= 1000 and "truncated" in capped
