#!/usr/bin/env bash
# Builds the single vela executable with deno compile.
#   ./compile.sh                       dist/vela-<version>-<target> for this machine
#   ./compile.sh --target TRIPLE       for x86_64-unknown-linux-gnu or aarch64-unknown-linux-gnu
#   ./compile.sh --target all          both, dist/vela-<version>-x86_64-unknown-linux-gnu and
#                                      dist/vela-<version>-aarch64-unknown-linux-gnu
#   ./compile.sh --output FILE         another file name (one target only)
# <version> is "version" in deno.json. deno compile needs the denort runtime of the same Deno version
# (for each target): it downloads it from dl.deno.land, or takes the file named by DENORT_BIN (one
# target's runtime, so not with --target all).
set -euo pipefail
cd "$(dirname "$0")"

# VELA drives Linux tun devices through libc, so only the Linux targets of deno compile.
targets_all=(x86_64-unknown-linux-gnu aarch64-unknown-linux-gnu)

usage_error() {
  echo "compile.sh: $1" >&2
  exit 2
}

target=""
output=""
while [ $# -gt 0 ]; do
  case "$1" in
    --target | --output)
      if [ $# -lt 2 ] || [ -z "$2" ]; then usage_error "$1 needs a value"; fi
      if [ "$1" = --target ]; then target="$2"; else output="$2"; fi
      shift 2 ;;
    --target=*) target="${1#*=}"; [ -n "$target" ] || usage_error "--target needs a value"; shift ;;
    --output=*) output="${1#*=}"; [ -n "$output" ] || usage_error "--output needs a value"; shift ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) usage_error "unknown argument $1" ;;
  esac
done

case "$target" in
  "") targets=("") ;;
  all) targets=("${targets_all[@]}") ;;
  x86_64-unknown-linux-gnu | aarch64-unknown-linux-gnu) targets=("$target") ;;
  *) usage_error "unknown target \"$target\"; give ${targets_all[0]}, ${targets_all[1]} or all" ;;
esac
if [ "$target" = all ] && [ -n "$output" ]; then
  usage_error "--output names one file; --target all writes one file per target into dist/"
fi
if [ "$target" = all ] && [ -n "${DENORT_BIN:-}" ]; then
  usage_error "DENORT_BIN is one target's denort runtime; with it, build one --target at a time"
fi

version=$(deno eval --quiet 'console.log(JSON.parse(Deno.readTextFileSync("deno.json")).version ?? "")')
if [ -z "$version" ]; then
  echo "compile.sh: deno.json has no \"version\"; the file names carry it" >&2
  exit 1
fi

# The permissions the daemon needs: libc through FFI, UDP, name lookups and the control socket, reading
# /proc and /sys, writing interface settings under /proc/sys/net and the control socket (--control may
# name any path), environment and system information for the runtime. testbed/netns.ts runs the
# namespace tests with the same list (VELA_PERMISSIONS); tests/packaging_test.ts checks they agree.
permissions=(--allow-ffi --allow-net --allow-read --allow-write --allow-env --allow-sys --allow-run)

if [ -n "${DENORT_BIN:-}" ] && [ ! -x "$DENORT_BIN" ]; then
  echo "compile.sh: DENORT_BIN=$DENORT_BIN is not an executable file" >&2
  exit 1
fi
log=$(mktemp)
partial=""
trap 'rm -f "$log" ${partial:+"$partial"}' EXIT

for t in "${targets[@]}"; do
  out="$output"
  if [ -z "$out" ]; then
    suffix=${t:-$(deno eval --quiet 'console.log(Deno.build.target)')}
    out="dist/vela-${version}-${suffix}"
  fi
  mkdir -p "$(dirname "$out")"
  # deno compile writes a temporary file beside the result, renamed only after a good build, so a failed
  # build leaves no partial executable (and an earlier good one stays).
  partial="$(dirname "$out")/.$(basename "$out").partial.$$"
  # The datapath Worker is loaded by URL at run time, so it must be embedded explicitly.
  args=(compile "${permissions[@]}" --include src/datapath_worker.ts --output "$partial")
  [ -n "$t" ] && args+=(--target "$t")
  if ! deno "${args[@]}" main.ts >"$log" 2>&1; then
    if [ -z "${DENORT_BIN:-}" ] && grep -qiE "dl\.deno\.land|dns error|download|error sending request" "$log"; then
      echo "compile.sh: deno compile could not download the denort runtime for Deno $(deno --version | head -1 | cut -d' ' -f2); build on a machine that reaches dl.deno.land, or set DENORT_BIN to that version's denort binary" >&2
    else
      cat "$log" >&2
    fi
    exit 1
  fi
  mv -f "$partial" "$out"
  partial=""
  echo "Built $out ($(du -h "$out" | cut -f1))"
done
