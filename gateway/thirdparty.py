"""Precise filters for warnings that third-party packages raise about each other, not about dcflex.

Why here: the gateway's console (``dcflex --help``, ``check-config``, ``demo``, ``run``) must show an operator only
what concerns the site. Each filter names the warning's category and the module it is attributed to, so the same
warning raised by dcflex's own code, or by any other module, still shows (and fails the tests, which turn warnings
into errors and repeat these filters in ``pyproject.toml``).

- ``signxml`` (imported by openleadr for XML signatures) names ``dsa.DSAPrivateKey`` in its type hints; cryptography
  51 deprecates DSA and warns at that attribute access, once per import. dcflex never signs or verifies with DSA.
"""

from __future__ import annotations

import warnings

__all__ = ["filter_third_party_warnings"]


def filter_third_party_warnings() -> None:
    """Install the filters (idempotent: ``warnings.filterwarnings`` replaces an identical filter)."""
    try:
        from cryptography.utils import CryptographyDeprecationWarning
    except ImportError:  # pragma: no cover - cryptography comes with openleadr
        return
    warnings.filterwarnings("ignore", category=CryptographyDeprecationWarning, module=r"signxml\.")
