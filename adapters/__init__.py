"""Scheduler adapters behind gateway.ports.SchedulerPort: Slurm, Ray, GPU power-capping backends."""
