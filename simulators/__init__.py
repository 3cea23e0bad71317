"""The simulated cluster, a scenario-driven VTN and the replay harness."""
