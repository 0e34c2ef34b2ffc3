"""The HTTP API of exportd (Starlette). Imports `daemon`; `daemon` never imports it."""
