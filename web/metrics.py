"""Prometheus metrics of the API process (GET /metrics)."""

from __future__ import annotations

from prometheus_client import Counter

# Incremented by web.download with the body bytes each download response sent.
DOWNLOAD_BYTES = Counter(
    "exportd_download_bytes", "Package bytes sent by download responses (exportd itself)"
)
