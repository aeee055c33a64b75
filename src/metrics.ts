/** An optional Prometheus text endpoint (--metrics HOST:PORT): GET /metrics. */

import denoJson from "../deno.json" with { type: "json" };
import type { CircuitStatus, DaemonStatus } from "./daemon/daemon.ts";
import { RuntimeFailure } from "./errors.ts";

/** A label value with \, " and newline escaped as the text format asks. */
function label(value: string): string {
  return value.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n");
}

/** The labels that name a circuit. */
function circuitLabels(c: CircuitStatus): string {
  return `peer="${label(c.peer)}",address="${label(c.address)}",vid="${c.vid}",ifname="${
    label(c.ifname ?? "")
  }"`;
}

/** The Prometheus text exposition of a daemon's status. */
export function formatMetrics(status: DaemonStatus): string {
  const lines: string[] = [];
  const family = (name: string, type: "counter" | "gauge", help: string) =>
    lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
  const perCircuit = (
    name: string,
    type: "counter" | "gauge",
    help: string,
    value: (c: DaemonStatus["circuits"][number]) => number | null,
  ) => {
    family(name, type, help);
    for (const c of status.circuits) {
      const v = value(c);
      if (v === null) continue;
      lines.push(`${name}{${circuitLabels(c)}} ${v}`);
    }
  };
  family("vela_info", "gauge", "VELA version");
  lines.push(`vela_info{version="${label(denoJson.version)}"} 1`);
  perCircuit(
    "vela_circuit_up",
    "gauge",
    "1 when the circuit is established",
    (c) => c.state === "established" ? 1 : 0,
  );
  perCircuit(
    "vela_circuit_tx_packets_total",
    "counter",
    "Frames sent to the peer, as on the wire (a TCP superframe from the device counts as its segments)",
    (c) => c.txPackets,
  );
  perCircuit(
    "vela_circuit_tx_bytes_total",
    "counter",
    "Bytes of the frames sent to the peer: the inner Ethernet frame (tap) or IP packet (tun), headers included, without the virtio-net header, vid byte, AEAD overhead or UDP/IP underlay",
    (c) => c.txBytes,
  );
  perCircuit(
    "vela_circuit_rx_packets_total",
    "counter",
    "Frames from the peer written to the device, as on the wire (before they were joined into superframes)",
    (c) => c.rxPackets,
  );
  perCircuit(
    "vela_circuit_rx_bytes_total",
    "counter",
    "Bytes of the frames from the peer written to the device, counted as the peer's tx_bytes counts them (each frame whole, before joining)",
    (c) => c.rxBytes,
  );
  perCircuit(
    "vela_circuit_send_failed_total",
    "counter",
    "Frames the underlay could not send",
    (c) => c.drops.sendFailed,
  );
  perCircuit(
    "vela_circuit_device_refused_total",
    "counter",
    "Frames the device refused",
    (c) => c.drops.deviceRefused,
  );
  family(
    "vela_circuit_rx_rejected_total",
    "counter",
    "Sealed frames from the peer dropped, by reason: bad-tag (forged or corrupted), replayed-data (a counter seen already), too-old (below the replay window), no-key (a key epoch the circuit does not hold)",
  );
  for (const c of status.circuits) {
    const labels = circuitLabels(c);
    lines.push(`vela_circuit_rx_rejected_total{${labels},reason="bad-tag"} ${c.drops.badTag}`);
    lines.push(`vela_circuit_rx_rejected_total{${labels},reason="replayed-data"} ${c.drops.replayedData}`);
    lines.push(`vela_circuit_rx_rejected_total{${labels},reason="too-old"} ${c.drops.tooOld}`);
    lines.push(`vela_circuit_rx_rejected_total{${labels},reason="no-key"} ${c.drops.noKey}`);
  }
  perCircuit(
    "vela_circuit_key_exhausted_total",
    "counter",
    "Frames not sent because the key had sealed all it may, or there was none yet",
    (c) => c.drops.keyExhausted,
  );
  perCircuit(
    "vela_circuit_filtered_total",
    "counter",
    "Frames the circuit's filter kept from crossing, both ways",
    (c) => c.drops.filtered ?? 0,
  );
  perCircuit(
    "vela_circuit_fragmented_total",
    "counter",
    "Frames sent in fragments because one datagram on the path could not hold them",
    (c) => c.fragmented ?? 0,
  );
  perCircuit(
    "vela_circuit_reassembled_total",
    "counter",
    "Frames joined from the peer's fragments",
    (c) => c.reassembled ?? 0,
  );
  perCircuit(
    "vela_circuit_reassembly_dropped_total",
    "counter",
    "Frames from the peer given up because not all their fragments came in time",
    (c) => c.drops.reassembly ?? 0,
  );
  perCircuit(
    "vela_circuit_compress_in_bytes_total",
    "counter",
    "Bytes of the frames the compression stage was given on the way out (0: compression off)",
    (c) => c.compressIn ?? 0,
  );
  perCircuit(
    "vela_circuit_compress_out_bytes_total",
    "counter",
    "Bytes those frames went out as, code bytes included, before the seal",
    (c) => c.compressOut ?? 0,
  );
  perCircuit(
    "vela_circuit_sent_uncompressed_total",
    "counter",
    "Frames the compression stage sent uncompressed (not tried, or not smaller)",
    (c) => c.sentUncompressed ?? 0,
  );
  perCircuit(
    "vela_circuit_bad_compression_total",
    "counter",
    "Frames from the peer dropped because they did not decompress",
    (c) => c.drops.badCompression ?? 0,
  );
  perCircuit(
    "vela_circuit_dictionary_missing_total",
    "counter",
    "Frames from the peer dropped because they named a compression dictionary this side does not hold",
    (c) => c.drops.dictionaryMissing ?? 0,
  );
  perCircuit(
    "vela_circuit_dictionaries_used_total",
    "counter",
    "Compression dictionaries this side's frames have used (the dictionary mode)",
    (c) => c.dictionariesUsed ?? 0,
  );
  family("vela_circuit_compression_info", "gauge", "The circuit's compression mode");
  for (const c of status.circuits) {
    lines.push(`vela_circuit_compression_info{${circuitLabels(c)},mode="${label(c.compression)}"} 1`);
  }
  family("vela_circuit_cipher_info", "gauge", "The circuit's data cipher");
  for (const c of status.circuits) {
    lines.push(`vela_circuit_cipher_info{${circuitLabels(c)},cipher="${label(c.cipher)}"} 1`);
  }
  perCircuit(
    "vela_circuit_key_age_seconds",
    "gauge",
    "Seconds since the session keys in use were made",
    (c) => c.keyAgeSeconds,
  );
  perCircuit(
    "vela_circuit_key_rotations_total",
    "counter",
    "Times the session keys were renewed",
    (c) => c.rotations,
  );
  perCircuit(
    "vela_circuit_rtt_seconds",
    "gauge",
    "Last keepalive round trip",
    (c) => c.rttMs === null ? null : c.rttMs / 1000,
  );
  perCircuit("vela_circuit_uptime_seconds", "gauge", "Seconds since established", (c) => c.uptimeSeconds);
  family("vela_dropped_datagrams_total", "counter", "Datagrams dropped on the way in, by reason");
  for (const [reason, count] of Object.entries(status.drops)) {
    lines.push(`vela_dropped_datagrams_total{reason="${label(reason)}"} ${count}`);
  }
  family(
    "vela_moderated_wakeups_total",
    "counter",
    "Wake-ups of the sending Worker that waited for more frames under bulk traffic",
  );
  lines.push(`vela_moderated_wakeups_total ${status.moderatedWakeups}`);
  family(
    "vela_udp_gso_refusals_total",
    "counter",
    "UDP GSO sends the kernel refused, each resent without GSO",
  );
  lines.push(`vela_udp_gso_refusals_total ${status.gsoRefusals ?? 0}`);
  return lines.join("\n") + "\n";
}

/** Serves GET /metrics on hostname:port until closed. Throws RuntimeFailure when it cannot listen. */
export function serveMetrics(
  address: { hostname: string; port: number },
  status: () => DaemonStatus,
): { close(): Promise<void> } {
  let server: Deno.HttpServer;
  try {
    server = Deno.serve({ hostname: address.hostname, port: address.port, onListen: () => {} }, (request) => {
      const url = new URL(request.url);
      if (url.pathname !== "/metrics") return new Response("Not found; try /metrics\n", { status: 404 });
      if (request.method !== "GET" && request.method !== "HEAD") return new Response(null, { status: 405 });
      return new Response(formatMetrics(status()), {
        headers: { "content-type": "text/plain; version=0.0.4; charset=utf-8" },
      });
    });
  } catch (error) {
    throw new RuntimeFailure(
      `Cannot serve metrics on ${address.hostname}:${address.port}: ${
        (error as Error).message
      }; choose another --metrics`,
    );
  }
  let closed = false;
  return {
    async close() {
      if (closed) return;
      closed = true;
      await server.shutdown();
    },
  };
}
