#!/usr/bin/env bash
# Pretrain on a Cloud TPU VM pod slice: the same command on every worker.
#
#   launch/tpu_vm.sh TPU_NAME ZONE configs/bert_base.py:phase1 gs://BUCKET/runs/base128 [--config.KEY=VALUE ...]
#
# Every host installs bert_jax (jax[tpu]) and runs `bert-jax pretrain` with
# config.distributed=True; jax.distributed.initialize() finds the other hosts itself.
# The workdir should be on storage all hosts share (a GCS bucket through gcsfuse, or
# Filestore): checkpoints are written collectively by all hosts.
set -euo pipefail
tpu=$1 zone=$2 config=$3 workdir=$4
shift 4
cd "$(dirname "$0")/.."
# Ship this checkout (code + configs) to every worker.
git archive --format=tar.gz -o /tmp/bert_jax.tar.gz HEAD
gcloud compute tpus tpu-vm scp /tmp/bert_jax.tar.gz "$tpu": --zone "$zone" --worker=all
gcloud compute tpus tpu-vm ssh "$tpu" --zone "$zone" --worker=all --command "
  set -e
  mkdir -p bert_jax && tar -xzf bert_jax.tar.gz -C bert_jax && cd bert_jax
  python3 -m pip install -q -e '.[tpu]'
  bert-jax pretrain --config $config --workdir $workdir --config.distributed=True $*
"
