#!/usr/bin/env bash
# Builds the single vela executable with deno compile.
#   ./compile.sh [--target TRIPLE] [--output FILE]
# deno compile needs the denort runtime of the same Deno version: it downloads it from dl.deno.land,
# or takes the file named by DENORT_BIN.
set -euo pipefail
cd "$(dirname "$0")"

target=""
output=""
while [ $# -gt 0 ]; do
  case "$1" in
    --target) target="$2"; shift 2 ;;
    --output) output="$2"; shift 2 ;;
    -h|--help) sed -n '2,5p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "compile.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

version=$(deno eval --quiet 'console.log(JSON.parse(Deno.readTextFileSync("deno.json")).version)')
if [ -z "$output" ]; then
  suffix=${target:-$(deno eval --quiet 'console.log(Deno.build.target)')}
  output="dist/vela-${version}-${suffix}"
fi
mkdir -p "$(dirname "$output")"

# The permissions the daemon needs: libc through FFI, UDP and name lookups, reading /proc and
# /sys, writing IPv6 interface settings, environment and system information for the runtime.
permissions=(--allow-ffi --allow-net --allow-read --allow-write=/proc/sys/net --allow-env --allow-sys)
args=(compile "${permissions[@]}" --output "$output")
[ -n "$target" ] && args+=(--target "$target")

if [ -n "${DENORT_BIN:-}" ] && [ ! -x "$DENORT_BIN" ]; then
  echo "compile.sh: DENORT_BIN=$DENORT_BIN is not an executable file" >&2
  exit 1
fi
log=$(mktemp)
trap 'rm -f "$log"' EXIT
if ! deno "${args[@]}" main.ts >"$log" 2>&1; then
  if [ -z "${DENORT_BIN:-}" ] && grep -qiE "dl\.deno\.land|dns error|download|error sending request" "$log"; then
    echo "compile.sh: deno compile could not download the denort runtime for Deno $(deno --version | head -1 | cut -d' ' -f2); build on a machine that reaches dl.deno.land, or set DENORT_BIN to that version's denort binary" >&2
  else
    cat "$log" >&2
  fi
  exit 1
fi
echo "Built $output ($(du -h "$output" | cut -f1))"
