#!/usr/bin/env bash
# Queue a whole llmfbn analysis on SLURM: the participant level as an array job (one task per
# participant, all sharing WORK_DIR's stimulus cache) and the group level as a job that starts
# when every task has succeeded (and is cancelled if one fails).
#
#   slurm/submit.sh BIDS_DIR OUTPUT_DIR WORK_DIR [llmfbn options for both levels]
#
# Environment (besides those of participant_array.sbatch: LLMFBN_SIF, LLMFBN_APPTAINER...):
#   LLMFBN_PARTICIPANTS      file of participant labels (default: BIDS_DIR/participants.tsv,
#                            else the sub-* folders)
#   PARTICIPANT_SBATCH_ARGS  extra sbatch options of the array, e.g. "--gres=gpu:1 -p gpu"
#   GROUP_SBATCH_ARGS        extra sbatch options of the group job, e.g. "-p cpu"
# Job logs go to WORK_DIR/slurm/. Prints the two job ids.
set -euo pipefail

if (($# < 3)); then
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
    exit 2
fi
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
mkdir -p "$2" "$3/slurm"
bids=$(realpath "$1") out=$(realpath "$2") work=$(realpath "$3")
shift 3

list="$work/slurm/participants-$(date +%Y%m%dT%H%M%S)-$$.txt"
if [[ -n "${LLMFBN_PARTICIPANTS:-}" ]]; then
    cp "$LLMFBN_PARTICIPANTS" "$list"
elif [[ -f "$bids/participants.tsv" ]]; then
    cp "$bids/participants.tsv" "$list"
else
    find "$bids" -mindepth 1 -maxdepth 1 -type d -name 'sub-*' -printf '%f\n' | sort > "$list"
fi
n=$(grep -c -v -e '^participant_id' -e '^[[:space:]]*$' "$list" || true)
if ((n == 0)); then
    echo "no participants in $list" >&2
    exit 1
fi

# shellcheck disable=SC2086  # the *_SBATCH_ARGS hold several options
array=$(sbatch --parsable --array="1-$n" --output="$work/slurm/%x-%A_%a.log" \
    --export=ALL,LLMFBN_PARTICIPANTS="$list" ${PARTICIPANT_SBATCH_ARGS:-} \
    "$here/participant_array.sbatch" "$bids" "$out" "$work" "$@")
array=${array%%;*}  # "id;cluster" on federated clusters
# shellcheck disable=SC2086
group=$(sbatch --parsable --dependency="afterok:$array" --kill-on-invalid-dep=yes \
    --output="$work/slurm/%x-%j.log" ${GROUP_SBATCH_ARGS:-} \
    "$here/group.sbatch" "$bids" "$out" "$work" "$@")
group=${group%%;*}
echo "participant array job ${array} (${n} tasks), group job ${group} after it; logs in ${work}/slurm/"
