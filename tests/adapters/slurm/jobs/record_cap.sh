#!/bin/bash
# Stands in for `nvidia-smi -pl WATTS` in the power-cap command template of ../test_adapter_real.py.
# Usage (as a template): srun --overlap --jobid={job_id} -w {node} record_cap.sh LOG {job_id} {node} {watts}
# Appends "<job it runs in> <host it runs on> <job id arg> <node arg> <watts>" to LOG, proving the template
# ran inside the job's allocation, on the node it names.
echo "${SLURM_JOB_ID:-none} $(hostname -s) $2 $3 $4" >> "$1"
