"""The Slurm adapter: reads jobs and nodes from ``squeue --json`` / ``sinfo --json`` and acts through
``scontrol`` / ``scancel`` (never a shell), behind ``gateway.ports.SchedulerPort``."""
