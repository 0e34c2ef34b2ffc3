"""Names in object storage: the `s3://BUCKET/PREFIX` setting and the key
parts exportd writes. Pure functions, no client: the settings parser uses
them without loading boto3.
"""

from __future__ import annotations

import re

# Key parts as exportd writes them (hex, uuid, `r1-a1-…tar.gz`) and prefixes an
# operator may choose; anything else in a row is refused, like `UnsafePath`.
KEY_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


def parse_storage_url(url: str) -> tuple[str, str]:
    """`s3://BUCKET/PREFIX` → (bucket, prefix without slashes at either end).

    The prefix may be empty (`s3://BUCKET`); its parts follow the key rules.
    Raises ValueError with a message naming what is wrong (not the URL).
    """
    scheme, sep, rest = url.partition("://")
    if scheme != "s3" or not sep:
        raise ValueError("expected s3://BUCKET/PREFIX")
    bucket, _, prefix = rest.partition("/")
    if not BUCKET.fullmatch(bucket) or ".." in bucket:
        raise ValueError("the bucket name must be 3-63 of a-z, 0-9, '.', '-'")
    prefix = prefix.strip("/")
    if prefix and not valid_parts(prefix):
        raise ValueError("the prefix may only hold A-Z, a-z, 0-9, '.', '_', '-' and '/'")
    return bucket, prefix


def valid_parts(path: str) -> bool:
    """Every `/`-separated part is a key part exportd could have written."""
    return all(KEY_PART.fullmatch(part) and part not in (".", "..") for part in path.split("/"))


# The one part exportd writes that starts with a dot: the checkpoint areas
# (`storage.layout.CHECKPOINT_DIR`, spelt here so that this module stays
# free of imports).
CHECKPOINT_PART = ".checkpoints"


def valid_relative(path: str) -> bool:
    """A path below the prefix that exportd could have written: key parts
    only, or key parts inside the checkpoint area."""
    head, sep, rest = path.partition("/")
    if head == CHECKPOINT_PART:
        return not sep or valid_parts(rest)
    return valid_parts(path)
