"""The `exportd.downloads` row of one download response (DESIGN §6, §10).

Opened when the answer starts (200, 206, or 302 for a redirect to object
storage), closed when it ends with the bytes really sent; the job's
`download_count` grows only for a response that delivered the file's last
byte (for a redirect: one that sent the client to the whole file).
"""

from __future__ import annotations

from daemon.db import downloads
from daemon.models import Job
from web.context import ApiContext
from web.metrics import DOWNLOAD_BYTES


class DownloadTracker:
    """Writes the `exportd.downloads` row of one response."""

    def __init__(self, ctx: ApiContext, job: Job, subject: str) -> None:
        self.ctx = ctx
        self.job = job
        self.subject = subject
        self.download_id: int | None = None

    async def start(self, status: int, range_header: str | None) -> None:
        async with self.ctx.connection() as conn:
            self.download_id = await downloads.start_download(
                conn,
                self.job.job_id,
                subject=self.subject,
                range_header=range_header,
                status_code=status,
            )

    async def finish(self, bytes_sent: int, completed: bool) -> None:
        if self.download_id is None:
            return
        DOWNLOAD_BYTES.inc(bytes_sent)
        async with self.ctx.connection() as conn:
            await downloads.finish_download(
                conn, self.download_id, bytes_sent=bytes_sent, completed=completed
            )

    async def redirected(self, range_header: str | None) -> None:
        """A 302 to object storage: the row says 302 and no byte count
        (exportd cannot see those bytes); a redirect without a Range header
        sends the client to the whole file and counts as a download."""
        await self.start(302, range_header)
        await self.finish(0, completed=range_header is None)
