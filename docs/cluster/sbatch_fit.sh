#!/bin/bash
# i2p fit on SLURM: NODES x GPUS, pre-emptible. Submit from the repository root:
#   sbatch docs/cluster/sbatch_fit.sh                                   # the default run file below
#   CONFIG=configs/experiments/scanobjectnn/io_resnet18.yaml sbatch --nodes 2 docs/cluster/sbatch_fit.sh
#   sbatch docs/cluster/sbatch_fit.sh --trainer.max_epochs 300          # extra flags go to `i2p fit`
# 120 s before the time limit (or on pre-emption with SIGUSR1) every task gets SIGUSR1: the fit finishes
# the batch in flight, writes runs/<name>/checkpoints/last.ckpt, requeues the job (scontrol requeue) and
# exits 138. The requeued job runs this same command, which resumes from `last` (--ckpt_path last) and
# continues the same W&B run; the first submission starts fresh (--allow_fresh true). docs/reliability.md.
#SBATCH --job-name=i2p-fit
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=4          # one task per GPU (Lightning's SLURM layout)
#SBATCH --gpus-per-node=4
#SBATCH --cpus-per-task=8            # DataLoader workers per GPU (data.init_args.num_workers)
#SBATCH --time=24:00:00
#SBATCH --signal=USR1@120            # to the job steps (all tasks), 120 s before the limit
#SBATCH --requeue
#SBATCH --open-mode=append           # a requeued job appends to the same log
#SBATCH --output=slurm-%x-%j.out
set -euo pipefail

CONFIG=${CONFIG:-configs/experiments/modelnet40/io_resnet18.yaml}
I2P=${I2P:-.venv/bin/i2p}
export OMP_NUM_THREADS=${SLURM_CPUS_PER_TASK:-1}
# Nodes without internet: pre-fetch the ImageNet weights into the shared hub cache once (login node),
# then export HF_HUB_OFFLINE=1 here. W&B goes offline by itself without network (wandb sync later).

srun --kill-on-bad-exit=1 $I2P fit --config "$CONFIG" \
    --trainer.accelerator gpu --trainer.strategy ddp \
    --trainer.devices "${SLURM_NTASKS_PER_NODE:-1}" --trainer.num_nodes "${SLURM_NNODES:-1}" \
    --ckpt_path last --allow_fresh true "$@"
