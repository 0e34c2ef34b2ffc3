"""exportd: a Postgres-native export job daemon.

`daemon` owns the data and runs jobs; `web` (the HTTP API) imports it,
never the other way round.
"""

__version__ = "0.1.0"
