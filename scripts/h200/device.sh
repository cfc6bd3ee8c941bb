#!/usr/bin/env bash
# Runs ON the lent H200 machine, from the repository root of the carried working tree (runs start there):
#
#   bash scripts/h200/device.sh STEP [STEP ...] 2>&1 | tee $OUT/device.log
#
# Steps, run in the order given (scripts/h200/README.md has the sequence of runs):
#   env            machine facts -> $OUT/env.txt (GPU, driver, python, torch, disk, memory, what pip lacks)
#   stash:<dir>    copy a carried folder's files (.whl-1, .whl-2) to $STASH, which survives back-to-back runs
#   install        join the stashed pieces, check the sha256, unpack vLLM into $SITE (skipped when that
#                  archive is already unpacked there), install .gpu/wheels (tuner's deps + tuner) into
#                  $SITE2, check that vllm, optuna and tuner import
#   model          write the random-weight Llama-3.1-8B to $MODEL with .gpu/make_model.py (skipped if there)
#   restore        put the study database with the most trials in place at $DB: the one kept on the machine
#                  ($DB itself), results/h200/<name>.db in the working tree, or .gpu/state/<name>.db carried
#   study          restore, then `python3 -m tuner run $STUDY --timeout <soft>` under a hard deadline:
#                  tuner starts no trial it cannot finish by the soft limit; at the hard limit it gets SIGINT
#                  (it stops the trial's server; the trial is queued again), SIGKILL 30 s later
#   confirm        restore, then `tuner confirm $STUDY --top ${TOP:-2} --repeats ${REPEATS:-1}` under the
#                  same hard deadline as study (fresh server starts of the leading configurations)
#   independent    restore, then scripts/h200/independent.py: `vllm bench serve` against the baseline's and
#                  the best trial's servers (or TRIALS="n m") at the levels tuner bracketed ->
#                  $OUT/independent.md, independent.log, independent.tar.gz (every level's raw result)
# Always, at the end (also after a failure): stop leftover vLLM servers, then copy to $OUT the database,
# the logs and telemetry of the trials run in this run (runs.tar.gz), tuner's output, `tuner status` and the
# Pareto table and PNG. At most 8 files come back: device.log (the tee above) + the 7 written here.
#
# Deadline: DEADLINE seconds after this script starts (default 560, under the 600 s run limit) everything
# is done, collection included. Steps that would start too late are skipped.
set -uo pipefail
export PYTHONUNBUFFERED=1
REPO=$(pwd)
[ -f "$REPO/pyproject.toml" ] && [ -d "$REPO/tuner" ] || { echo "run me from the repository root" >&2; exit 2; }

STUDY=${STUDY:-studies/h200-llama8b.yaml}
NAME=${NAME:-h200-llama8b}
STATE=${STATE:-/root/tuner-state}            # survives back-to-back runs (a warm machine keeps /root)
DB=${DB:-$STATE/$NAME.db}
RUNS=${RUNS:-$STATE/$NAME.runs}              # the study file's results_dir
STASH=${STASH:-/root/stash}
SITE=${SITE:-/tmp/site}
SITE2=${SITE2:-/tmp/site2}
MODEL=${MODEL:-/root/models/llama8b-rand}
SHAPE=${SHAPE:-8b}
DEADLINE=${DEADLINE:-560}
COLLECT_S=${COLLECT_S:-45}                   # kept for stopping servers and collecting
OVERRUN_S=${OVERRUN_S:-60}                   # how far a trial may run past tuner's soft timeout (a new
                                             # compile key makes a start ~40 s longer than the mean)
OUT=${OUT:-/tmp/device-out}
N_TRIALS=${N_TRIALS:-}                       # a new budget of finished trials (else the stored one)
PY=${PY:-python3}
CHECK_IMPORTS=${CHECK_IMPORTS:-vllm vllm.entrypoints.openai.api_server optuna sqlalchemy tuner.cli.main}
mkdir -p "$OUT" "$STATE" "$STASH" "$RUNS"
T0=$(date +%s)
MARK="$STATE/.run-start"
touch "$MARK"

# the carried packages first: tuner's source (this tree), its deps, then the vLLM bundle
export PYTHONPATH="$REPO:$SITE2:$SITE${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 VLLM_NO_USAGE_STATS=1 DO_NOT_TRACK=1
export VLLM_USE_FLASHINFER_SAMPLER=${VLLM_USE_FLASHINFER_SAMPLER:-0}
export TUNER_RUNTIME_DIR="$STATE/runtime"    # server pidfiles: leftovers of a cut-off run are found here

el() { echo $(($(date +%s) - T0)); }
left() { echo $((DEADLINE - $(el))); }
log() { echo "[$(date +%H:%M:%S) +$(el)s] $*"; }
gpu_used() { nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits 2>/dev/null | head -1; }

stop_leftovers() {
  local killed
  killed=$("$PY" -c "from tuner.server.procs import stop_leftover_servers as s; print(s('$TUNER_RUNTIME_DIR'))" 2>&1 | tail -1)
  [ "$killed" = "[]" ] || log "leftover server groups stopped: $killed"
  # backstop: a vLLM server of this model that no pidfile names (setsid'd servers outlive a run)
  local pid
  for pid in $(pgrep -f "vllm.entrypoints.* serve $MODEL" 2>/dev/null); do
    log "stray server pid $pid: SIGTERM to its group"
    kill -TERM -- -"$(ps -o pgid= -p "$pid" | tr -d ' ')" 2>/dev/null
  done
  for _ in $(seq 1 40); do
    pgrep -f "vllm.entrypoints.* serve $MODEL" >/dev/null 2>&1 || break
    sleep 0.5
  done
  for pid in $(pgrep -f "vllm.entrypoints.* serve $MODEL" 2>/dev/null); do kill -KILL -- -"$(ps -o pgid= -p "$pid" | tr -d ' ')" 2>/dev/null; done
  log "GPU memory used: $(gpu_used) MiB"
}

trials_in() {  # DB -> "<finished trials> <last trial id>" (0 0 when unreadable)
  "$PY" - "$1" <<'PY'
import sqlite3, sys
try:
    con = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True)
    n, last = con.execute(
        "select count(*), coalesce(max(trial_id), 0) from trials where state in ('COMPLETE', 'FAIL', 'PRUNED')"
    ).fetchone()
    print(n, last)
except Exception:
    print(0, 0)
PY
}

restore() {
  local best="" best_n=-1 best_last=-1 c n last
  for c in "$DB" "$REPO/results/h200/$NAME.db" "$REPO/.gpu/state/$NAME.db"; do
    [ -s "$c" ] || continue
    read -r n last < <(trials_in "$c")
    log "database $c: $n finished trials (last id $last)"
    if [ "$n" -gt "$best_n" ] || { [ "$n" -eq "$best_n" ] && [ "$last" -gt "$best_last" ]; }; then
      best=$c best_n=$n best_last=$last
    fi
  done
  if [ -z "$best" ]; then log "no database yet: the study starts fresh at $DB"; return; fi
  if [ "$best" != "$DB" ]; then
    [ -s "$DB" ] && cp -p "$DB" "$DB.before-restore"
    cp "$best" "$DB" && rm -f "$DB-journal" "$DB-wal" "$DB-shm"
    log "restored $best -> $DB"
  else
    log "keeping $DB"
  fi
}

collect() {
  trap - EXIT INT TERM
  log "=== collect (left: $(left)s)"
  stop_leftovers
  [ -s "$DB" ] && cp "$DB" "$OUT/$NAME.db"
  # logs and telemetry of this run's trials (plus tuner's own output); big raw records are left out if needed
  if [ -n "$(find "$RUNS" -type f -newer "$MARK" -print -quit 2>/dev/null)" ]; then
    ( cd "$STATE" && find "$NAME.runs" -type f -newer "$MARK" -print0 2>/dev/null \
        | tar --null -czf "$OUT/runs.tar.gz" --files-from=- 2>/dev/null )
  fi
  if [ "$(stat -c %s "$OUT/runs.tar.gz" 2>/dev/null || echo 0)" -gt $((15 * 1024 * 1024)) ]; then
    ( cd "$STATE" && find "$NAME.runs" -type f -newer "$MARK" -size -2M -print0 \
        | tar --null -czf "$OUT/runs.tar.gz" --files-from=- 2>/dev/null )
    log "runs.tar.gz: files over 2 MB left out"
  fi
  if [ -s "$DB" ] && [ "$(left)" -gt 30 ]; then
    export COLUMNS=${COLUMNS:-160}   # rich wraps tables to a few characters when it sees no terminal
    {
      echo "## tuner status"; timeout 25 "$PY" -m tuner status "$STUDY" --storage "sqlite:///$DB" 2>&1
      echo; echo "## tuner pareto"
      timeout 25 "$PY" -m tuner pareto "$STUDY" --storage "sqlite:///$DB" --plot "$OUT/pareto.png" 2>&1
    } > "$OUT/status.txt"
  fi
  ls -la "$OUT"
  log "=== done"
}
trap collect EXIT
trap 'log "interrupted"; exit 130' INT TERM

log "device.sh $* (deadline ${DEADLINE}s; repo $REPO)"
for step in "$@"; do
  kind=${step%%:*}; arg=${step#*:}; [ "$arg" = "$step" ] && arg=""
  if [ "$(left)" -le "$COLLECT_S" ]; then log "SKIP $step: past the deadline"; continue; fi
  log "=== step $step"
  case "$kind" in
    env)
      {
        nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version --format=csv
        nvidia-smi | head -5
        "$PY" -c "import sys, torch; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"
        uname -r; grep PRETTY /etc/os-release; nproc; free -g | head -2; df -h / /tmp /root | tail -n +2
        "$PY" -m pip list 2>/dev/null | grep -i -E '^(optuna|sqlalchemy|alembic|mako|colorlog|greenlet|aiohttp|numpy|pydantic|pyyaml|rich|nvidia-ml-py|transformers|tokenizers|matplotlib|plotly|tqdm) '
        "$PY" -c "from tuner.measure.envinfo import environment; import json; print(json.dumps(environment(), indent=1))" 2>&1
      } > "$OUT/env.txt" 2>&1
      cat "$OUT/env.txt" ;;
    stash)
      [ -d "$arg" ] || { log "no folder $arg (carry it)"; exit 3; }
      cp -v "$arg"/* "$STASH"/ && echo "stashed $arg at $(date)" >> "$STASH/MARKER"
      ls -la "$STASH" ;;
    install)
      if [ -f "$SITE/.sha256" ] && cmp -s "$SITE/.sha256" "$STASH/site.tar.xz.sha256" && [ -d "$SITE/vllm" ]; then
        log "vLLM bundle already unpacked in $SITE"
      else
        ls "$STASH"/site.tar.xz.part-* >/dev/null 2>&1 || { log "nothing stashed: run stash:.whl-1 and stash:.whl-2 first"; exit 3; }
        ( cd "$STASH" && cat site.tar.xz.part-* > /root/site.tar.xz && cd /root && sha256sum -c "$STASH/site.tar.xz.sha256" ) \
          || { log "reassembly FAILED (a piece missing? stash both .whl-1 and .whl-2)"; exit 3; }
        rm -rf "$SITE" && mkdir -p "$SITE"
        if command -v xz >/dev/null; then xz -dc -T0 /root/site.tar.xz; else "$PY" -c "import lzma,shutil,sys; shutil.copyfileobj(lzma.open('/root/site.tar.xz'), sys.stdout.buffer)"; fi \
          | tar -x -C "$SITE" || { log "unpack FAILED"; exit 3; }
        cp "$STASH/site.tar.xz.sha256" "$SITE/.sha256"
        rm -f /root/site.tar.xz
        log "unpacked into $SITE ($(du -sh "$SITE" | cut -f1))"
      fi
      ( cd "$REPO/.gpu" && sha256sum --quiet -c SHA256SUMS ) || { log ".gpu is incomplete (run prepare.sh here, carry .gpu)"; exit 3; }
      rm -rf "$SITE2"
      "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE2" "$REPO"/.gpu/wheels/*.whl \
        || { log "pip install of .gpu/wheels FAILED"; exit 3; }
      for mod in $CHECK_IMPORTS; do
        "$PY" -c "import $mod as m; print('$mod', getattr(m, '__version__', ''), m.__file__)" 2>&1 | tail -1
        "$PY" -c "import $mod" 2>/dev/null || { log "import $mod FAILED"; exit 3; }
      done ;;
    model)
      if [ -f "$MODEL/config.json" ] && ls "$MODEL"/*.safetensors >/dev/null 2>&1; then
        log "model already at $MODEL ($(du -sh "$MODEL" | cut -f1))"
      else
        "$PY" "$REPO/.gpu/make_model.py" --out "$MODEL" --shape "$SHAPE" 2>&1 | tail -5
        [ -f "$MODEL/config.json" ] || { log "model FAILED"; exit 3; }
        log "model written: $(du -sh "$MODEL" | cut -f1)"
      fi ;;
    restore)
      restore ;;
    study)
      restore
      stop_leftovers
      hard=$(( $(left) - COLLECT_S ))
      soft=$(( hard - OVERRUN_S ))
      if [ "$hard" -lt 90 ]; then log "SKIP study: ${hard}s is too little for a trial"; continue; fi
      log "tuner run: soft timeout ${soft}s (no new trial it cannot finish), hard stop ${hard}s"
      timeout --signal=INT --kill-after=30 "$hard" \
        "$PY" -m tuner run "$STUDY" --storage "sqlite:///$DB" --timeout "${soft}s" ${N_TRIALS:+--n-trials "$N_TRIALS"} 2>&1 \
        | tee "$OUT/tuner.log"
      rc=${PIPESTATUS[0]}
      log "tuner exited with $rc (0 done or timed out, 124/130 stopped at the hard limit, 137 killed)" ;;
    confirm)
      # `tuner confirm`: the study's leading configurations re-measured, each in a fresh server start
      # (TOP configurations, REPEATS starts each), stored beside their first measurement
      restore
      stop_leftovers
      hard=$(( $(left) - COLLECT_S ))
      if [ "$hard" -lt 90 ]; then log "SKIP confirm: ${hard}s is too little for a start"; continue; fi
      timeout --signal=INT --kill-after=30 "$hard" \
        "$PY" -m tuner confirm "$STUDY" --storage "sqlite:///$DB" --top "${TOP:-2}" --repeats "${REPEATS:-1}" 2>&1 \
        | tee "$OUT/tuner.log"
      log "tuner confirm exited with ${PIPESTATUS[0]}" ;;
    independent)
      # vLLM's own client against the baseline's and the best trial's servers (scripts/h200/independent.py)
      restore
      stop_leftovers
      d="$STATE/independent"; mkdir -p "$d"
      "$PY" scripts/h200/independent.py "$STUDY" --storage "sqlite:///$DB" --out "$d" \
        --deadline $(( $(left) - COLLECT_S - 90 )) ${TRIALS:+--trials $TRIALS} ${LEVELS:+--levels $LEVELS} 2>&1 | tee "$OUT/independent.log"
      cp "$d/independent.md" "$OUT/" 2>/dev/null
      ( cd "$STATE" && tar -czf "$OUT/independent.tar.gz" independent ) ;;
    *)
      log "unknown step $step"; exit 2 ;;
  esac
done
