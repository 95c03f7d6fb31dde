"""The reference Manager: gRPC for daemons, a database of the fleet, and the REST API.

Run it with ``hostvisor-manager run``. (The public names are added as the parts land.)
"""

from __future__ import annotations

from ._errors import (
    ConflictError as ConflictError,
    DaemonUnreachableError as DaemonUnreachableError,
    ManagerConfigError as ManagerConfigError,
    ManagerError as ManagerError,
    NotFoundError as NotFoundError,
    StoreError as StoreError,
)
