"""Tool families, one module each; ``base`` holds the contract, ``registry`` the selection."""

from kasloop.tools.base import Tool, ToolContext, ToolFailure, ToolResult
from kasloop.tools.registry import FAMILIES, select_tools

__all__ = ["FAMILIES", "Tool", "ToolContext", "ToolFailure", "ToolResult", "select_tools"]
