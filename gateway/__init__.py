"""dcflex: a demand-response gateway that makes a GPU cluster's power follow OpenADR events."""

from gateway.thirdparty import filter_third_party_warnings

__version__ = "0.1.0"

# Before any of the gateway's modules imports openleadr (and with it signxml): see gateway.thirdparty.
filter_third_party_warnings()
