"""The kinds a process knows: the exports file, EXPORTD_KINDS modules, entry points.

Loaded once at start; any problem stops the program with one line naming
the file, kind or module (ConfigError / KindError).
"""

from __future__ import annotations

from daemon.config import Settings
from daemon.errors import ConfigError, KindError
from daemon.kinds.demo import demo_exports_file
from daemon.kinds.exports_file import load_exports_file
from daemon.kinds.registry import KindRegistry


def load_kinds(settings: Settings, database_url: str) -> KindRegistry:
    """Every kind configured for this process.

    Without EXPORTD_EXPORTS_FILE, the demo exports file that `exportd up` left
    in the data directory (if any) is loaded, so commands run beside `up`
    know its kinds.
    """
    registry = KindRegistry()
    exports_file = settings.exports_file
    if exports_file is None and demo_exports_file(settings).exists():
        exports_file = demo_exports_file(settings)
    try:
        if exports_file is not None:
            for kind in load_exports_file(exports_file, default_database_url=database_url):
                registry.register(kind)
        for module in settings.kinds:
            registry.load_module(module)
        registry.load_entry_points()
    except KindError as exc:
        raise ConfigError("EXPORTD_KINDS", str(exc)) from None
    return registry
