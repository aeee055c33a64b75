#!/usr/bin/env bash
# trace_deopt.sh -- VELA under the benchmark's TCP and UDP load with V8's --trace-deopt on both daemons,
# then every deoptimization counted by function and reason. A function that deoptimizes a handful of
# times while it warms up is normal; one that deoptimizes hundreds of times is a loop that keeps falling
# back to slow code. Run as root:
#
#   bash bench/trace_deopt.sh            # vela-tap and vela-tun, as peers.sh runs them
#   VELA_ARGS=--no-offload bash bench/trace_deopt.sh
set -euo pipefail
HERE=$(dirname "$(readlink -f "$0")")
DENO_BIN=${DENO:-$(command -v deno)}
WRAP=$(mktemp /tmp/vela-deopt-deno.XXXXXX)
trap 'rm -f "$WRAP"' EXIT
cat > "$WRAP" <<WRAPPER
#!/bin/sh
command=\$1; shift
exec "$DENO_BIN" "\$command" --v8-flags=--trace-deopt "\$@"
WRAPPER
chmod +x "$WRAP"
OUT=${OUT:-$(mktemp -d /tmp/vela-deopt.XXXXXX)}
PEERS="${PEERS:-vela-tap vela-tun}" DENO="$WRAP" OUT="$OUT" bash "$HERE/peers.sh"
echo "== deoptimizations in $OUT (count, function, reason)"
cat "$OUT"/vela-*/vela-*.log | grep -a "deoptimizing" |
  sed -E 's/.*reason: ([^)]*)\).*<JSFunction ([^ >]*).*/\2 \1/; t; s/.*<JSFunction ([^ >]*).*/\1 ?/' |
  sort | uniq -c | sort -rn | head -40
