"""plugway: an OpenAI-compatible gateway with server-side tool orchestration.

The public plugin API is exactly what this module exports::

    from runtime import hookimpl, ToolContext, ToolError
"""

from runtime.plugin_host.hookspecs import hookimpl
from runtime.plugin_host.tool import ToolContext, ToolError

__all__ = ["ToolContext", "ToolError", "hookimpl"]
__version__ = "0.1.0"
