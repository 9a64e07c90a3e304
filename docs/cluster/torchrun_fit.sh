#!/bin/bash
# i2p fit on NNODES machines x GPUS without SLURM (torchrun). Run on every node, from the repository root:
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=node0 GPUS=8 bash docs/cluster/torchrun_fit.sh     # on node0
#   NNODES=2 NODE_RANK=1 MASTER_ADDR=node0 GPUS=8 bash docs/cluster/torchrun_fit.sh     # on node1
# A worker that dies (OOM kill, a lost node coming back) makes torchrun restart all workers up to
# MAX_RESTARTS times with this same command, which resumes from runs/<name>/checkpoints/last.ckpt.
# SIGTERM to the job saves `last` and exits 143; run the script again to resume. docs/reliability.md.
set -euo pipefail

CONFIG=${CONFIG:-configs/experiments/modelnet40/io_resnet18.yaml}
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
GPUS=${GPUS:-1}
PYTHON=${PYTHON:-.venv/bin/python}
ACCELERATOR=${ACCELERATOR:-gpu}

"$PYTHON" -m torch.distributed.run --nnodes "$NNODES" --nproc-per-node "$GPUS" --node-rank "$NODE_RANK" \
    --master-addr "${MASTER_ADDR:-127.0.0.1}" --master-port "${MASTER_PORT:-29500}" \
    --max-restarts "${MAX_RESTARTS:-3}" \
    -m i2p.cli fit --config "$CONFIG" \
    --trainer.accelerator "$ACCELERATOR" --trainer.strategy ddp \
    --trainer.devices "$GPUS" --trainer.num_nodes "$NNODES" \
    --ckpt_path last --allow_fresh true "$@"
