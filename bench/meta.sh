# What produced a results file, written beside it as <name>.meta.json for
# bench/report.py: the command (the script with the knobs that were set in
# the environment) and the commit (with -dirty when tracked files had
# changes). Sourced by the bench scripts:
#
#   source bench/meta.sh
#   bench_command=$(command_line bench/run.sh SCENARIOS PEERS ...)  # before defaults are applied
#   ...
#   write_meta "$out" "$bench_command"

command_line() { # script, then the knobs it reads: the command as typed
  local script="$1" knob value line=""
  shift
  for knob in "$@"; do
    [[ -n "${!knob+x}" ]] || continue
    value="${!knob}"
    if [[ $value =~ ^[A-Za-z0-9_.,/:=+@%-]*$ ]]; then
      line+="$knob=$value "
    else
      line+="$knob=\"${value//\"/\\\"}\" "
    fi
  done
  echo "$line$script"
}

write_meta() { # results file, command
  local commit
  commit="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  if [[ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]]; then
    commit+="-dirty"
  fi
  python3 - "${1%.*}.meta.json" "$2" "$commit" <<'PY'
import json, sys
with open(sys.argv[1], "w") as f:
    json.dump({"command": sys.argv[2], "commit": sys.argv[3], "recorded": True}, f, indent=1)
    f.write("\n")
PY
}

report_reminder() { # results files: how to put them on BENCHMARKS.md
  echo "to put this run on BENCHMARKS.md: git add $* ${1%.*}.meta.json && python3 bench/report.py" >&2
}
