"""When periodic tasks run: procrastinate cron strings from intervals.

procrastinate defers each tick of a periodic task once, whatever the number
of workers, so exactly one worker runs it.
"""

from __future__ import annotations


def every(seconds: float) -> str:
    """procrastinate cron for "every `seconds`" (its cron has a seconds field)."""
    whole = max(1, round(seconds))
    if whole < 60:
        return f"* * * * * */{whole}"
    minutes = max(1, round(whole / 60))
    if minutes < 60:
        return f"*/{minutes} * * * *"
    return f"0 */{max(1, min(24, round(minutes / 60)))} * * *"
