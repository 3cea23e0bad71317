#!/bin/bash
# A training-loop stand-in for the Slurm adapter's integration tests (../test_adapter_real.py).
#
# It counts steps. On SIGUSR1 (what its comment tag "dcflex:checkpoint=USR1:<grace>" promises) it writes
# its step counter to a checkpoint file and acknowledges it, as a real training job would:
#   DCFLEX_ACK_MODE=marker  writes the marker file $DCFLEX_TEST_DIR/acks/<job id>, holding the checkpoint's path
#   DCFLEX_ACK_MODE=cli     runs `dcflex ack <job id> --path <checkpoint>` (gateway URL from $DCFLEX_GATEWAY_URL)
#   DCFLEX_ACK_MODE=none    checkpoints without acknowledging
# When Slurm starts it again after a requeue, it resumes from the checkpointed step.
# Everything it writes is in $DCFLEX_TEST_DIR, named by job id: log.<id>, ckpt.<id>, progress.<id>.
set -u
dir=${DCFLEX_TEST_DIR:?set DCFLEX_TEST_DIR}
id=$SLURM_JOB_ID
ckpt="$dir/ckpt.$id"
log="$dir/log.$id"
step=0
if [ -s "$ckpt" ]; then step=$(cat "$ckpt"); fi

checkpoint() {
  echo "$step" > "$ckpt.tmp" && mv -f "$ckpt.tmp" "$ckpt"
  echo "checkpoint step=$step" >> "$log"
  case "${DCFLEX_ACK_MODE:-marker}" in
    marker)
      mkdir -p "$dir/acks" && echo "$ckpt" > "$dir/acks/.$id.tmp" && mv -f "$dir/acks/.$id.tmp" "$dir/acks/$id" ;;
    cli)
      if dcflex ack "$id" --path "$ckpt" >> "$log" 2>&1; then echo "acked" >> "$log"; else echo "ack failed" >> "$log"; fi ;;
  esac
}
trap checkpoint USR1
# The trap is set: only now may the test signal the job (an untrapped USR1 would end it).
echo "start step=$step restarts=${SLURM_RESTART_COUNT:-0}" >> "$log"

while :; do
  step=$((step + 1))
  echo "$step" > "$dir/progress.$id"
  sleep 0.2
done
