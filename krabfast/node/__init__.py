"""A headless node host: connects to a gateway as role "node" and serves commands."""

from krabfast.node.commands import CommandRegistry, NodeCommandError, default_registry
from krabfast.node.host import NodeHost

__all__ = ["CommandRegistry", "NodeCommandError", "NodeHost", "default_registry"]
