"""Checkpoint areas of the S3 backend: objects under
`<prefix>/.checkpoints/<job_id>-r<run>/`, where the run's next attempt finds
them whichever host it runs on.

    .checkpoints/<job_id>-r<run>/files/<name>    a kept file
    .checkpoints/<job_id>-r<run>/step-<n>.json   the record of step n (after its files)

What it costs: every kept file is uploaded once when its step finishes (the
export's bytes cross the network a second time: once as the package, once
here), and downloaded again by an attempt that resumes. The area is removed
when the run ends; the checkpoint sweep removes what a crash left.
"""

from __future__ import annotations

import re
from functools import partial
from pathlib import Path
from typing import Any

import boto3.exceptions
import boto3.s3.transfer

from daemon.storage import layout
from daemon.storage.backend import RunId
from daemon.storage.s3 import S3Storage
from daemon.storage.s3_errors import S3RequestFailed, S3Unavailable

_RECORD = re.compile(r"step-(\d{1,6})\.json")
_NAME = re.compile(r"[0-9a-f]{8,128}")


class S3Checkpoints:
    """The checkpoint areas under one bucket prefix."""

    def __init__(self, s3: S3Storage) -> None:
        self.s3 = s3
        # One part at a time per file: steps run beside other exports.
        self.transfer = boto3.s3.transfer.TransferConfig(
            multipart_threshold=s3.part_size, multipart_chunksize=s3.part_size, max_concurrency=2
        )

    def put_file(self, run: RunId, name: str, source: Path) -> None:
        key = self._file_key(run, name)
        self._transfer(
            "PutObject",
            lambda: self.s3.client.upload_file(
                str(source), self.s3.bucket, key, Config=self.transfer
            ),
        )

    def get_file(self, run: RunId, name: str, target: Path) -> None:
        key = self._file_key(run, name)
        target.parent.mkdir(parents=True, exist_ok=True)
        self._transfer(
            "GetObject",
            lambda: self.s3.client.download_file(
                self.s3.bucket, key, str(target), Config=self.transfer
            ),
        )

    def put_record(self, run: RunId, step: int, data: bytes) -> None:
        key = self.s3.key_of(f"{run.relative}/step-{int(step)}.json")
        self.s3.call(
            "PutObject",
            lambda: self.s3.client.put_object(
                Bucket=self.s3.bucket, Key=key, Body=data, ContentType="application/json"
            ),
        )

    def records(self, run: RunId) -> dict[int, bytes]:
        found: dict[int, bytes] = {}
        for item in self.s3.list_keys(f"{run.relative}/step-"):
            match = _RECORD.fullmatch(item.key.rsplit("/", 1)[-1])
            if match is None:
                continue
            try:
                answer = self.s3.call(
                    "GetObject",
                    partial(self.s3.client.get_object, Bucket=self.s3.bucket, Key=item.key),
                )
            except S3RequestFailed as exc:
                if exc.code in ("NoSuchKey", "404", "NotFound"):
                    continue  # deleted since the listing
                raise
            found[int(match[1])] = answer["Body"].read()
        return found

    def delete(self, run: RunId) -> None:
        keys = [item.key for item in self.s3.list_keys(f"{run.relative}/")]
        for start in range(0, len(keys), 1000):
            batch: list[Any] = [
                {"Key": self.s3.check_key(key)} for key in keys[start : start + 1000]
            ]
            self.s3.call(
                "DeleteObjects",
                partial(
                    self.s3.client.delete_objects,
                    Bucket=self.s3.bucket,
                    Delete={"Objects": batch, "Quiet": True},
                ),
            )

    def runs(self) -> list[RunId]:
        runs: set[RunId] = set()
        for item in self.s3.list_keys(f"{layout.CHECKPOINT_DIR}/"):
            parts = self.s3.relative(item.key).split("/")
            parsed = layout.checkpoint_run_of(parts[1]) if len(parts) > 2 else None
            if parsed is not None:
                runs.add(RunId(*parsed))
        return sorted(runs, key=lambda r: (str(r.job_id), r.run))

    def _file_key(self, run: RunId, name: str) -> str:
        if not _NAME.fullmatch(name):
            raise ValueError("a checkpoint file name is lower-case hex")
        return self.s3.key_of(f"{run.relative}/files/{name}")

    def _transfer(self, operation: str, call: Any) -> None:
        """boto3's managed transfers raise their own error for a failed
        upload; it becomes exportd's like any other failed request."""
        try:
            self.s3.call(operation, call)
        except boto3.exceptions.S3UploadFailedError as exc:
            raise S3Unavailable(f"object storage {operation} failed") from exc
