"""The job channel: what the gateway asks of jobs and what they answer, independent of how it travels.

A scheduler adapter asks a job to checkpoint (``JobDirectives``) and waits for its acknowledgement
(``CheckpointAcks``); the job's ETAs are kept beside its directive. The HTTP API (``gateway.api``) is one way
jobs reach this channel (a marker file is another); adapters use the channel, never the HTTP layer.
"""

from gateway.jobchannel.acks import Ack, CheckpointAcks
from gateway.jobchannel.directives import Directive, JobDirectives

__all__ = ["Ack", "CheckpointAcks", "Directive", "JobDirectives"]
