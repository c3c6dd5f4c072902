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

from runtime.mcp.results import render_result, result_text, scrub_binary
from runtime.plugin_host.tool import ToolResult
from runtime.text import truncate


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
    rendered = render_result(result, 10_000)
    assert isinstance(rendered, ToolResult)
    (image,) = rendered.images
    assert (image.mime_type, image.size, image.data) == ("image/png", 1027, base64.b64encode(png).decode())
    # Sounds travel beside the text as images do; the loop describes them to models that cannot hear.
    (sound,) = rendered.audio
    assert (sound.mime_type, sound.size, sound.describe()) == ("audio/wav", 100, "[audio: audio/wav, 100 bytes]")
    lines = rendered.text.split("\n")
    assert lines == [
        "[resource: file:///notes.txt]",
        "note body",
        "[resource: file:///report.pdf, application/pdf, 40 bytes]",
        "[resource link: invoice <https://example.com/i/1>: PDF]",
    ]


def test_empty_results_say_so() -> None:
    assert render_result(CallToolResult(content=[]), 100) == "(no output)"
    assert "error" in render_result(CallToolResult(content=[], is_error=True), 100)


def test_long_results_are_capped_with_a_notice() -> None:
    text = truncate("z" * 5000, 300)
    assert len(text) <= 300
    assert text.startswith("z" * 200)
    assert text.endswith("of 5000 characters]")
    shown = int(text.split("showing ")[1].split(" ")[0])
    assert text.count("z") == shown
    assert truncate("short", 300) == "short"
    capped = render_result(CallToolResult(content=[_text("q" * 10_000)]), 1000)
    assert len(capped) <= 1000 and "truncated" in capped


# A 150 KB PNG, as a filesystem server returns a picture: an image block, and the
# same blob again in structuredContent.
BIG_PNG = base64.b64encode(bytes(range(256)) * 600).decode()


def test_an_image_repeated_in_structured_content_never_becomes_text() -> None:
    result = CallToolResult(
        content=[ImageContent(type="image", data=BIG_PNG, mime_type="image/png")],
        structured_content={"content": [{"type": "image", "data": BIG_PNG, "mimeType": "image/png"}]},
    )
    rendered = render_result(result, 20_000)
    assert isinstance(rendered, ToolResult)
    assert rendered.images[0].data == BIG_PNG and rendered.images[0].size == 153_600
    assert BIG_PNG[:100] not in rendered.text and len(rendered.text) < 100
    # Where only text can go, the image is described: type and size, no base64.
    assert result_text(rendered) == "[image: image/png, 153600 bytes]"


def test_embedded_image_resources_are_images_with_their_name() -> None:
    result = CallToolResult(
        content=[
            _text("the chart"),
            EmbeddedResource(
                type="resource",
                resource=BlobResourceContents(uri="file:///reports/q3-chart.png", blob=BIG_PNG, mime_type="image/png"),
            ),
        ]
    )
    rendered = render_result(result, 1000)
    assert isinstance(rendered, ToolResult) and rendered.text == "the chart"
    assert rendered.images[0].name == "q3-chart.png"
    assert rendered.images[0].describe() == "[image 'q3-chart.png': image/png, 153600 bytes]"


def test_base64_left_in_structured_data_is_described() -> None:
    structured = {"name": "scan", "pdf": base64.b64encode(bytes(range(256)) * 4).decode(), "note": "y" * 500}
    text = render_result(CallToolResult(content=[_text("dup")], structured_content=structured), 10_000)
    assert isinstance(text, str)
    data = json.loads(text)
    assert data["pdf"] == "[binary data, 1024 bytes, not shown]"
    assert data["note"] == "y" * 500  # long text is not mistaken for an encoding
    assert scrub_binary("data:image/png;base64," + BIG_PNG) == "[image/png, 153600 bytes, not shown]"


def test_a_json_object_holding_one_content_string_is_that_string() -> None:
    body = 'Line one\nLine "two"'
    wrapped = json.dumps({"content": body})
    assert render_result(CallToolResult(content=[_text(wrapped)]), 1000) == body
    assert render_result(CallToolResult(content=[_text("{}")], structured_content={"content": body}), 1000) == body
    # Anything else in the object keeps it JSON.
    other = json.dumps({"content": body, "path": "a.txt"})
    assert render_result(CallToolResult(content=[_text(other)]), 1000) == other


def test_error_results_describe_their_images() -> None:
    result = CallToolResult(
        content=[_text("render failed"), ImageContent(type="image", data=BIG_PNG, mime_type="image/png")],
        is_error=True,
    )
    assert render_result(result, 1000) == "render failed\n[image: image/png, 153600 bytes]"
