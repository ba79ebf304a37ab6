# Sourced by the training scripts: `stage NAME COMMAND...` runs the command and appends its wall time to
# $OUT/timings.txt.
stage() {
    local name=$1; shift
    local t0=$(date +%s)
    "$@"
    echo "$name $(( $(date +%s) - t0 )) s" | tee -a "$OUT/timings.txt"
}
