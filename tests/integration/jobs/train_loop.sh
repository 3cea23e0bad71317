#!/bin/bash
# A toy training loop for the end-to-end test on Slurm (../test_slurm_e2e.py).
#
# It counts steps (one per 0.2 s) into $DCFLEX_TEST_DIR/progress.<job id>. On SIGUSR1 (what its comment tag
# "dcflex:checkpoint=USR1:<grace>" promises the gateway) it saves the step counter to ckpt.<job id> and
# acknowledges the checkpoint the way its DCFLEX_ACK_MODE says:
#   cli     `dcflex ack <job id> --path <checkpoint>` to the gateway's HTTP API, whose URL it reads from the
#           file $DCFLEX_GATEWAY_URL_FILE at that moment (the gateway starts after the job, on a free port)
#   marker  the marker file $DCFLEX_TEST_DIR/acks/<job id> (scheduler.slurm.ack_marker_path), holding the
#           checkpoint's path
# When Slurm starts it again after a requeue, it resumes from the checkpointed step, so the counter goes on
# from there instead of starting at 0. log.<job id> records "start step=N restarts=R", "checkpoint step=N"
# and the acknowledgement's outcome.
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
    cli)
      url=$(cat "${DCFLEX_GATEWAY_URL_FILE:?set DCFLEX_GATEWAY_URL_FILE}" 2>/dev/null || echo "http://127.0.0.1:9")
      if dcflex ack "$id" --path "$ckpt" --gateway "$url" >> "$log" 2>&1; then
        echo "acked via http" >> "$log"
      else
        echo "ack failed" >> "$log"
      fi ;;
    *)
      mkdir -p "$dir/acks" && echo "$ckpt" > "$dir/acks/.$id.tmp" && mv -f "$dir/acks/.$id.tmp" "$dir/acks/$id"
      echo "acked via marker" >> "$log" ;;
  esac
}
trap checkpoint USR1
# Only once the trap is set may the gateway signal the job (an untrapped USR1 would end it).
echo "start step=$step restarts=${SLURM_RESTART_COUNT:-0}" >> "$log"

while :; do
  step=$((step + 1))
  echo "$step" > "$dir/progress.$id"
  sleep 0.2
done
