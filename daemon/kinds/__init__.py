"""What an export is: kinds, their params and steps, and what a step is handed.

The decorator API for custom kinds is imported from here:

    from daemon.kinds import ExportContext, Kind, Param
"""

from daemon.errors import ParamError, UnknownKind
from daemon.kinds.context import ExportContext, JobCancelled, JobInfo
from daemon.kinds.params import Param
from daemon.kinds.registry import Kind, KindRegistry, Step

__all__ = [
    "ExportContext",
    "JobCancelled",
    "JobInfo",
    "Kind",
    "KindRegistry",
    "Param",
    "ParamError",
    "Step",
    "UnknownKind",
]
