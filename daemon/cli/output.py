"""What every command prints to: one console, and the exit codes."""

from __future__ import annotations

from rich.console import Console

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CONFIG = 2

console = Console()
