"""The embedded default (`plugway serve` with no configuration, the demo model, the bundled servers) in code mode."""

from __future__ import annotations

from pathlib import Path

import openai

from tests.test_embedded_default import embedded

__all__ = ["embedded"]  # the fixture, used by name


def test_the_embedded_default_shows_code_mode_offline(embedded: tuple[str, str, Path, str]) -> None:
    base, key, _, _ = embedded
    client = openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0, timeout=30)
    classic = client.chat.completions.create(model="demo", messages=[{"role": "user", "content": "What is 17 * 23?"}])
    coded = client.chat.completions.create(model="demo", messages=[{"role": "user", "content": "What is 17 * 23?"}], extra_body={"orchestration_mode": "code"})
    assert coded.choices[0].message.content == classic.choices[0].message.content == "[demo model] 17 * 23 = 391"
    trace = coded.model_extra["plugway"]  # type: ignore[index]
    assert (trace["mode"], trace["rounds"], trace["tool_calls"][0]["name"]) == ("code", 2, "plugway__run_script")
    assert [c["name"] for c in trace["tool_calls"][0]["calls"]] == ["calculator__evaluate"]
    # The whole catalogue's definitions are not in the prompt: fewer prompt tokens than classic mode.
    assert coded.usage is not None and classic.usage is not None
    assert coded.usage.prompt_tokens < classic.usage.prompt_tokens
