#!/bin/bash
# Launch NSHARDS shards of one sparkv eval run on the GPU, each its own process (setsid; they outlive the call).
# Usage: gpu/eval_job.sh RUN NSHARDS <sparkv eval ruler options...>   -> /root/res/RUN/
RUN=$1; N=$2; shift 2
export PYTHONPATH=/root/repo:/root/site SPARKV_CACHE=/root/cache PYTHONUNBUFFERED=1
mkdir -p /root/res/$RUN /root/logs
cd /root/repo
for i in $(seq 0 $((N-1))); do
  setsid nohup python -m sparkv.cli eval ruler --out /root/res/$RUN --shard $i/$N --quiet "$@" \
    > /root/logs/$RUN.$i.log 2>&1 < /dev/null &
  sleep 2
done
echo "launched $N shards of $RUN"
