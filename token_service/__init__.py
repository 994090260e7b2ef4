"""Scan-and-Share OPD token service."""

import sys

# httpx imports its command-line client (and with it rich, pygments and click's help formatting) whenever
# those packages happen to be installed, as they are beside typer. The service never runs that client and
# it cost every worker about 4 MB, so it is marked absent: httpx then treats it as not installed.
if "httpx" not in sys.modules:
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
