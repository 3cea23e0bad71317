"""The signal policy: an OpenADR event's signals → a directive, and whether to opt in at all.

``map_event(event, ctx, site, policy, now)`` is the one entry point; it is pure and never raises
for a translated event. See ``docs/configuration.md`` ([policy], [site]) for the numbers it uses.
"""

from gateway.policy.mapping import Mapping, SiteContext, map_event
from gateway.policy.signals import SUPPORTED_TYPES

__all__ = ["SUPPORTED_TYPES", "Mapping", "SiteContext", "map_event"]
