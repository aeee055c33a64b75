/** The demo's choice of metrics lines (the demo itself runs in tests/netns/demo_test.ts). */

import assert from "node:assert/strict";
import { interestingMetrics } from "../testbed/demo.ts";

const LABELS = `{peer="198.18.101.2",address="198.18.101.2",vid="3",ifname="vela3"}`;

Deno.test("the demo shows each circuit's state and counters and only the drops that happened", () => {
  const page = [
    "# HELP vela_circuit_up 1 when the circuit is established, else 0",
    "# TYPE vela_circuit_up gauge",
    `vela_info{version="0.1.0"} 1`,
    `vela_circuit_up${LABELS} 1`,
    `vela_circuit_tx_packets_total${LABELS} 2790340`,
    `vela_circuit_tx_bytes_total${LABELS} 4104264893`,
    `vela_circuit_rx_packets_total${LABELS} 31601`,
    `vela_circuit_rx_bytes_total${LABELS} 2086591`,
    `vela_circuit_send_failed_total${LABELS} 0`,
    `vela_circuit_device_refused_total${LABELS} 2`,
    `vela_circuit_rtt_seconds${LABELS} 0.0015`,
    `vela_circuit_uptime_seconds${LABELS} 9`,
    `vela_dropped_datagrams_total{reason="unknown-circuit"} 0`,
    `vela_dropped_datagrams_total{reason="runt"} 3`,
    "vela_moderated_wakeups_total 0",
    "",
  ].join("\n");
  assert.deepEqual(interestingMetrics(page), [
    `vela_circuit_up${LABELS} 1`,
    `vela_circuit_tx_packets_total${LABELS} 2790340`,
    `vela_circuit_tx_bytes_total${LABELS} 4104264893`,
    `vela_circuit_rx_packets_total${LABELS} 31601`,
    `vela_circuit_rx_bytes_total${LABELS} 2086591`,
    `vela_circuit_device_refused_total${LABELS} 2`,
    `vela_circuit_rtt_seconds${LABELS} 0.0015`,
    `vela_dropped_datagrams_total{reason="runt"} 3`,
  ]);
});
