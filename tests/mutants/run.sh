#!/usr/bin/env bash
# The mutation run: each tests/mutants/*.patch is a deliberately broken
# driver or core. For each one, a worktree of HEAD under $MUTANTS_WORK gets
# the patch, then (a) the host tests of the crates it touches and (b) every
# board in checking mode run against it. A variant is CAUGHT when any of
# them fails, MISSED when all pass. See tests/mutants/README.md.
#
#   tests/mutants/run.sh [--host-only | --boards-only] [--first] [--baseline] [NAME-PATTERN...]
#
# --first stops at the first stage that catches a variant (faster, names
# fewer catchers). --baseline first runs the boards on HEAD unpatched and
# stops if they fail (a red baseline would count every variant caught).
# NAME-PATTERNs select patches by substring.
#
# Environment: MUTANTS_WORK (default /tmp/mutants: the worktree, one cargo
# target dir shared by all variants, the logs), HOST_TIMEOUT (seconds for
# one variant's host tests, default 300: they take under a minute), BOARDS_TIMEOUT (seconds for one
# variant's board run, builds included, default 2400), SEED_TARGET (a target
# dir to copy in when the shared one does not exist yet, e.g. the main
# tree's `target`: the registry crates are then not rebuilt).
set -uo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(git -C "$here" rev-parse --show-toplevel)"
work="${MUTANTS_WORK:-/tmp/mutants}"
host_timeout="${HOST_TIMEOUT:-300}"
boards_timeout="${BOARDS_TIMEOUT:-2400}"
run_host=1 run_boards=1 first=0 baseline=0
patterns=()
for a in "$@"; do
    case "$a" in
        --host-only) run_boards=0 ;;
        --boards-only) run_host=0 ;;
        --first) first=1 ;;
        --baseline) baseline=1 ;;
        -h | --help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        -*) echo "run.sh: unknown option $a" >&2; exit 2 ;;
        *) patterns+=("$a") ;;
    esac
done

head="$(git -C "$root" rev-parse HEAD)"
wt="$work/wt"
target="$work/target"
logs="$work/logs"
# The files the previous variant patched: $target may hold their build.
dirty="$work/dirty"
built_head="$work/built-head"
mkdir -p "$work" "$logs"
if [ ! -d "$target" ]; then
    if [ -n "${SEED_TARGET:-}" ] && [ -d "$SEED_TARGET" ]; then
        echo "run.sh: seeding $target from $SEED_TARGET" >&2
        cp -a "$SEED_TARGET" "$target"
    else
        mkdir -p "$target"
    fi
fi
# The worktree's files are dated at the epoch: builds in $target from
# before it (seeded, or of another HEAD) count as stale, later ones as
# fresh. A new HEAD starts a new epoch.
epoch="$work/epoch"
touch "$dirty"
if [ ! -s "$epoch" ] || [ ! -s "$built_head" ] || [ "$(cat "$built_head")" != "$head" ]; then
    date '+%Y-%m-%d %H:%M:%S.%N' >"$epoch"
    : >"$dirty"
    sleep 1
fi
echo "$head" >"$built_head"

patches=()
for p in "$here"/*.patch; do
    name="$(basename "$p" .patch)"
    if [ ${#patterns[@]} -gt 0 ]; then
        hit=0
        for pat in "${patterns[@]}"; do [[ "$name" == *"$pat"* ]] && hit=1; done
        [ $hit = 1 ] || continue
    fi
    patches+=("$p")
done
if [ ${#patches[@]} -eq 0 ]; then
    echo "run.sh: no patch selected" >&2
    exit 2
fi

remove_worktree() {
    if [ -e "$wt" ]; then
        if ! git -C "$root" worktree remove --force "$wt" >/dev/null 2>&1; then
            rm -rf "$wt"
            git -C "$root" worktree prune
        fi
    fi
}
trap remove_worktree EXIT

# A worktree of HEAD at the same path each time, its files dated at the
# epoch except those the shared target holds another variant's build of
# (dated now): cargo then rebuilds only what changed.
fresh_worktree() {
    remove_worktree
    git -C "$root" worktree add --detach --quiet "$wt" "$head" || return 1
    (cd "$wt" && git ls-files -z | xargs -0 touch -h -d "$(cat "$epoch")")
    while read -r f; do
        [ -n "$f" ] && [ -e "$wt/$f" ] && touch "$wt/$f"
    done <"$dirty"
    ln -s "$target" "$wt/target"
}

# The packages owning the files a patch changes.
packages_of() {
    local f d
    for f in $(sed -n 's|^+++ b/||p' "$1"); do
        d="$(dirname "$f")"
        while [ "$d" != "." ] && [ ! -f "$wt/$d/Cargo.toml" ]; do d="$(dirname "$d")"; done
        [ -f "$wt/$d/Cargo.toml" ] || continue
        sed -n 's/^name *= *"\(.*\)"/\1/p' "$wt/$d/Cargo.toml" | head -1
    done | sort -u
}

# Host tests: "host:NAME" per failed test, "host:timeout" after the
# timeout; BUILD-FAILED when the patch does not compile.
host_stage() {
    local log="$1" pkgs args p rc
    pkgs="$(packages_of "$2")"
    args=()
    for p in $pkgs; do args+=(-p "$p"); done
    [ ${#args[@]} -gt 0 ] || return 0
    (cd "$wt" && timeout -k 10 "$host_timeout" nice cargo test "${args[@]}" --no-fail-fast) >"$log" 2>&1
    rc=$?
    if [ $rc = 124 ]; then
        # A test that never ends (libtest names it after 60 s) is caught.
        sed -n 's/^test \(.*\) \.\.\. FAILED$/host:\1/p' "$log" | sort -u
        sed -n 's/^test \(.*\) has been running for over 60 seconds$/host:\1(hung)/p' "$log" | sort -u
        echo "host:timeout(${host_timeout}s)"
    elif [ $rc != 0 ]; then
        if ! grep -q '^test result:' "$log" && grep -q '^error' "$log"; then
            echo "BUILD-FAILED"
        else
            sed -n 's/^test \(.*\) \.\.\. FAILED$/host:\1/p' "$log" | sort -u
            grep -q '^test .* \.\.\. FAILED$' "$log" || echo "host:cargo-test-exit-$rc"
        fi
    fi
}

# Boards in checking mode: "BOARD:TEST" per failed test point, or
# "BOARD:FAIL(reason)" when a board failed without one.
boards_stage() {
    local log="$1" rc
    # The runner finds the workspace from where it was compiled unless
    # told: a runner built for another tree would boot that tree's kernel.
    (cd "$wt" && IOMMU_WORKSPACE="$wt" timeout -k 10 "$boards_timeout" nice cargo qemu-run run --board all --timeout 300 \
        --append iommu.check) >"$log" 2>&1
    rc=$?
    if [ $rc = 124 ]; then
        echo "boards:timeout(${boards_timeout}s)"
        return
    fi
    if grep -q 'could not compile\|^error\[' "$log"; then
        echo "BUILD-FAILED"
        return
    fi
    awk '
        /^qemu-run: [A-Za-z0-9_.#-]+: / {
            b = $2; sub(/:$/, "", b)
            if ($3 == "FAIL:") { if (!(b in named)) { r = $0; sub(/^[^:]*: [^:]*: FAIL: /, "", r); print b ":FAIL(" r ")" } }
            board = b
            next
        }
        /^not ok [0-9]+ - / && !/# *(TODO|SKIP)/ { t = $0; sub(/^not ok [0-9]+ - /, "", t); sub(/ *#.*$/, "", t); print board ":" t; named[board] = 1 }
    ' "$log"
    [ $rc = 0 ] || grep -q ':FAIL\|^not ok' "$log" || echo "boards:qemu-run-exit-$rc"
}

caught=0 total=0
results="$work/results.txt"
: >"$results"
echo "mutation run of $head ($(date -u '+%Y-%m-%d %H:%M UTC'))" | tee -a "$results"
if [ $baseline = 1 ]; then
    start=$(date +%s)
    fresh_worktree || exit 2
    mapfile -t found < <(boards_stage "$logs/baseline.boards.log")
    if [ ${#found[@]} -gt 0 ]; then
        echo "baseline: HEAD fails unpatched: ${found[*]} (see $logs/baseline.boards.log)" | tee -a "$results"
        exit 1
    fi
    printf '%-48s %-7s %4ss\n' "baseline (HEAD, no patch)" "PASS" "$(($(date +%s) - start))" | tee -a "$results"
fi
for p in "${patches[@]}"; do
    name="$(basename "$p" .patch)"
    total=$((total + 1))
    start=$(date +%s)
    if ! fresh_worktree; then
        echo "run.sh: cannot create the worktree $wt" >&2
        exit 2
    fi
    # From now on the shared target may hold this variant's build of
    # these files: the next worktree must date them new.
    sed -n 's|^+++ b/||p' "$p" >"$dirty"
    if ! (cd "$wt" && git apply --check "$p" 2>"$logs/$name.apply" && git apply "$p"); then
        printf '%-48s APPLY-FAILED  %s\n' "$name" "$(head -1 "$logs/$name.apply")" | tee -a "$results"
        continue
    fi
    by=()
    if [ $run_host = 1 ]; then
        mapfile -t found < <(host_stage "$logs/$name.host.log" "$p")
        by+=("${found[@]}")
    fi
    if [ $run_boards = 1 ] && ! { [ $first = 1 ] && [ ${#by[@]} -gt 0 ]; }; then
        mapfile -t found < <(boards_stage "$logs/$name.boards.log")
        by+=("${found[@]}")
    fi
    secs=$(($(date +%s) - start))
    if printf '%s\n' "${by[@]}" | grep -q '^BUILD-FAILED$'; then
        verdict="BUILD-FAILED"
        what="the patched tree does not build: see $logs/$name.*.log"
    elif [ ${#by[@]} -gt 0 ]; then
        verdict="CAUGHT"
        caught=$((caught + 1))
        what="$(printf '%s\n' "${by[@]}" | paste -sd' ')"
    else
        verdict="MISSED"
        what="every host test and board passed"
    fi
    printf '%-48s %-7s %4ss  by: %s\n' "$name" "$verdict" "$secs" "$what" | tee -a "$results"
done
echo "caught $caught of $total" | tee -a "$results"
