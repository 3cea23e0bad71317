"""dcflex: a demand-response gateway that makes a GPU cluster's power follow OpenADR events."""

__version__ = "0.1.0"
