"""plugway: an OpenAI-compatible gateway with server-side tool orchestration.

The public plugin API is exactly what this module exports::

    from runtime import hookimpl, ToolContext, ToolError

and, for tools that return images or sounds, ``ToolResult``, ``ToolImage`` and ``ToolAudio``; for tools that ask
the request's model (``ctx.sample``), ``SamplingRequest`` and ``SamplingResult``; for
CPU-bound work that must stop at the tool's timeout, ``run_isolated`` (a killable
worker process).
"""

from runtime.plugin_host.hookspecs import hookimpl
from runtime.plugin_host.isolation import run_isolated
from runtime.plugin_host.tool import (
    SamplingRequest,
    SamplingResult,
    ToolAudio,
    ToolContext,
    ToolError,
    ToolImage,
    ToolResult,
)

__all__ = ["SamplingRequest", "SamplingResult", "ToolContext", "ToolAudio", "ToolError", "ToolImage", "ToolResult", "hookimpl", "run_isolated"]
__version__ = "0.1.0"
