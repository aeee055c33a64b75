/**
 * The help texts: `vela --help` (HELP) and `vela help COMMAND` / `vela COMMAND --help` (COMMAND_HELP).
 * The man page and the shell completions (src/cli_docs.ts) are made from these and from the option
 * tables in src/cli.ts, so that help, man page and completion say the same.
 */

import {
  CONFIG_COMPANIONS,
  DEFAULT_CONTROL_PORT,
  DEFAULT_PORT,
  type SubcommandName,
  WATCH_INTERVAL_DEFAULT_S,
} from "./cli.ts";
import {
  DEFAULT_MAX_CIRCUITS,
  DEFAULT_MAX_CIRCUITS_PER_PEER,
  MAX_CIRCUITS_LIMIT,
  MAX_VID,
} from "./circuit_rules.ts";
import { HOST_CONTROL } from "./control/socket_path.ts";
import { MODERATION_WAIT_US, REKEY_AFTER_MS } from "./timing.ts";

/** What may go with --config, as the help says it, wrapped at 100 columns. */
const companions = wrap(
  `With --config FILE, only these options may be given too: ${
    CONFIG_COMPANIONS.map((name) => name === "verbose" ? "-v" : name === "quiet" ? "-q" : `--${name}`)
      .join(", ")
  }.`,
  100,
);

function wrap(text: string, width: number): string {
  const lines: string[] = [];
  let line = "";
  for (const word of text.split(" ")) {
    if (line !== "" && line.length + 1 + word.length > width) {
      lines.push(line);
      line = word;
    } else line = line === "" ? word : `${line} ${word}`;
  }
  return [...lines, line].join("\n");
}

const CONTROL_OPTIONS = `Where the daemon is (status, top, devices, connect, close, showconf):
  --control PATH      the daemon's control socket on this host (default ${HOST_CONTROL}; in a network
                      namespace NS made by ip netns, /run/vela/NS.sock)
  --remote HOST[:PORT]  a daemon on another host, started with --control-listen (default port ${DEFAULT_CONTROL_PORT};
                      an IPv6 address as [ADDRESS]:PORT)
  --key-file FILE     with --remote: the control key to prove (that daemon's --control-key, or its
                      --key-file when it has no --control-key); a --control-read-key only reads
`;

export const HELP = `VELA, the Virtual Ethernet Link Application: an Ethernet link between two hosts over UDP.

Usage:
  vela --peer HOST --vid N [options]     start a circuit to HOST; HOST's side is configured by the handshake
  vela --listen --allow CIDR [options]   accept circuits from initiators in CIDR (repeatable)
  vela --listen --key-file FILE          accept circuits from initiators that hold the same key
  vela --config FILE                     run the listener and circuits a JSON file describes
  vela genkey                            print a new random key (one line) for --key-file
  vela status [IFNAME] [--json]          the running daemon's circuits: state, uptime, RTT, counters, drops;
                                         with IFNAME (vela3) one circuit in full
  vela top                               a live view of the circuits: rates, drops, RTT (status --watch)
  vela devices [--json]                  the interfaces the running daemon made
  vela connect --peer HOST --vid N [circuit options]   add a circuit to the running daemon
  vela close --peer HOST --vid N         close a circuit of the running daemon
  vela showconf                          print the running configuration as a --config file
  vela check-config FILE                 check a --config file and the key files it names, and exit
  vela help [COMMAND]                    this help, or one command's (also vela COMMAND --help)
  vela completion bash|zsh               print a shell completion script
  vela man                               print the manual page (roff)
  vela --help | --version

Circuit options (with --peer):
  --peer HOST         peer name or IPv4/IPv6 address (a name is looked up again when the peer goes
                      silent and every minute; the circuit follows it)
  --vid N             circuit id, 1 to 255; the interface is vela<N>
  --mode tap|tun      tap carries Ethernet frames (default), tun carries IP packets
  --address CIDR      this side's address, e.g. 198.18.207.1/30 or fd00:1::1/126 (repeatable, one per
                      family); the peer takes the other host of the pair (/31 and /127 also work)
  --mtu N             link MTU to propose (default: the route MTU to the peer minus the encapsulation)
  --ifname NAME       interface name instead of vela<N>
  --bridge BR         put the tap into the existing Linux bridge BR; a bridged tap needs no --address
  --far-bridge BR     ask the listener to put its tap into its bridge BR (one it offers: --offer-bridge)
  --compress          offer to compress the frames (LZ4 per frame; a frame that does not shrink goes as it
                      was, and traffic that does not compress is left alone for a while); the listener
                      must say --compress too; not on an encrypted circuit (see --compress-with-encryption)
  --compress-with-encryption
                      compress also when the frames are encrypted, accepting that their sizes then tell
                      something of what they hold (CRIME, BREACH, VORACLE); both ends must say it
  --compress-mode M   with --compress: dictionary (default: frames are compressed against a dictionary of
                      earlier frames the peer confirmed it holds, and each alone until then) or stateless
                      (each frame alone); a listener's mode is the most it accepts
  --local-mac MAC     a MAC on this side (repeatable)
  --remote-mac MAC    a MAC on the far side (repeatable); with either, a tap circuit carries out only
                      frames from a local or to a remote MAC, and in only frames to a local or from a
                      remote MAC (broadcast and multicast from a listed host too); the rest is counted
  --block KIND        frames that never cross (repeatable): ipv4, arp, ipv6, lldp, stp, broadcast,
                      multicast, or an EtherType such as 0x88b5
  --local-port P      local UDP port (default: any free port; with --listen, the --port)
  -4, --ipv4          use only the peer's IPv4 address
  -6, --ipv6          use only the peer's IPv6 address

Listener options:
  --listen            accept IREQs and create the interfaces they ask for
  --allow CIDR        underlay prefix whose IREQs are accepted (repeatable)
  --insecure-accept-any   accept IREQs from any address (for closed test networks only)
  --max-circuits N    circuits this daemon holds at most (1-${MAX_CIRCUITS_LIMIT}, default ${DEFAULT_MAX_CIRCUITS}); an IREQ
                      beyond it is refused with a NAK and counted (circuit-limit)
  --max-circuits-per-peer N
                      circuits one peer address may hold here (1-${MAX_VID}, default ${DEFAULT_MAX_CIRCUITS_PER_PEER})
  --bridge BR         every tap this listener creates joins the existing Linux bridge BR
  --offer-bridge BR   an initiator may ask (--far-bridge BR) for its tap to join bridge BR (repeatable)
  --compress          accept the compression initiators offer, on circuits in clear (and with
                      --compress-with-encryption on encrypted ones too)

Common options:
  --key-file FILE     pre-shared key (from vela genkey), the same on both sides: every control message
                      carries a MAC, every data frame is encrypted and authenticated with keys made
                      new by each handshake; give it again for more keys a listener accepts (the first
                      one is the initiator's)
  --cipher C          the data cipher with a key: auto (default: AES-256-GCM where both CPUs have AES
                      instructions, else ChaCha20-Poly1305), aes-256-gcm, chacha20-poly1305, or none
                      (frames in clear on purpose; both ends log a warning)
  --up CMD            run CMD (with sh -c) once a circuit's interface is up; VELA_IFNAME, VELA_VID,
                      VELA_PEER, VELA_MODE, VELA_ROLE, VELA_BRIDGE and VELA_EVENT=up in its environment
  --down CMD          the same when the interface is removed (VELA_EVENT=down)
  --rekey-after S     new session keys every S seconds (1-120, default ${REKEY_AFTER_MS / 1000})
  --port P            UDP port of the peer and of the listener (default ${DEFAULT_PORT})
  --control PATH      the daemon's control socket (default ${HOST_CONTROL}; in a network namespace NS
                      made by ip netns, /run/vela/NS.sock); the subcommands talk to it
  --control-listen ADDR[:PORT]
                      accept remote control (vela status --remote, connect --remote, ...) over TCP on
                      ADDR (default port ${DEFAULT_CONTROL_PORT}), authenticated by a key and encrypted; off unless given
  --control-key FILE  a key that may run every command remotely (repeatable); without one, the daemon's
                      --key-file does, so anyone holding the circuit key may also drive this daemon
  --control-read-key FILE  a key that may only read remotely: status, top, devices, showconf (repeatable)
  --metrics HOST:PORT serve Prometheus metrics at http://HOST:PORT/metrics (e.g. 127.0.0.1:9455)
  --underlay libc|deno  the UDP datapath: libc (default: a socket made through libc, served by
                      Worker threads with recvmmsg/sendmmsg) or deno (Deno.listenDatagram)
  --no-offload        no offloads: devices without TCP or UDP segmentation and checksum offload, no UDP GSO
                      or GRO (the libc datapath uses them where the kernel allows; turn them off if a
                      kernel's GSO misbehaves)
  --datapath-threads 1|2  Worker threads of the libc datapath: 2, one receiving and one sending
                      (default where the machine has 2 CPUs or more), or 1 doing both (default on 1 CPU)
  --moderation-us N   while the devices carry over 200 Mbit/s, the libc datapath waits N microseconds
                      (0-1000; default ${MODERATION_WAIT_US}, 0 with --no-offload) after each wake-up before
                      it reads them, so one sendmmsg carries more frames; 0 never waits (less delay, more
                      CPU under load)
  -v, --verbose       log debug messages too
  -q, --quiet         log errors only
  -h, --help          show this help
  -V, --version       show the version

${companions}

${CONTROL_OPTIONS}
  --json              (status, devices, connect, close) print the daemon's answer as JSON

The daemon runs until SIGINT or SIGTERM, then tells its peers (CREQ) and removes its interfaces.
SIGHUP makes a daemon started with --config read the file again: new circuits start, removed ones
close, unchanged ones are not touched (circuits added with vela connect close too, unless the file
has them: vela showconf prints a file that does).
Exit codes: 0 on a clean stop, 1 on a runtime failure, 2 on a usage error.
`;

/** One command's help: `vela help COMMAND`, `vela COMMAND --help`. */
export const COMMAND_HELP: Readonly<Record<SubcommandName, string>> = {
  status: `Usage: vela status [IFNAME] [--json] [--watch [--interval S] [--count N]] [where]

The running daemon's circuits, one line each: interface, peer, state, uptime, RTT, packets and bytes
each way, drops. With IFNAME (such as vela3; also --circuit IFNAME) one circuit in full: its mode, MTU,
inner addresses (those VELA derived too), cipher and key state, last heard or down since, and why the
peer refused it when it did. A byte is a byte of the inner frame (tap) or packet (tun) as the device
sees it, so both ends of a circuit count the same.

  --json              the daemon's answer as JSON
  --circuit IFNAME    one circuit in full (as IFNAME)
  --watch             refresh until interrupted (as vela top)
  --interval S        with --watch: seconds between refreshes (default ${WATCH_INTERVAL_DEFAULT_S})
  --count N           with --watch: stop after N refreshes

${CONTROL_OPTIONS}
`,
  top: `Usage: vela top [--interval S] [--count N] [where]

A live view of the running daemon's circuits, refreshed every S seconds: state, bit/s and packets/s each
way, drops, RTT and when each peer was last heard. Ctrl-C ends it. The same as vela status --watch.

  --interval S        seconds between refreshes (default ${WATCH_INTERVAL_DEFAULT_S})
  --count N           stop after N refreshes (for scripts; without a terminal the screen is not cleared)

${CONTROL_OPTIONS}
`,
  devices: `Usage: vela devices [--json] [where]

The interfaces the running daemon made: name, mode, MTU, peer, vid, state.

  --json              the daemon's answer as JSON

${CONTROL_OPTIONS}
`,
  connect: `Usage: vela connect --peer HOST --vid N [circuit options] [--port P] [where]

Adds a circuit to the running daemon and waits until it is established. The circuit options are those
of vela --peer: --mode, --address (repeatable), --mtu, --ifname, --bridge, --far-bridge, --compress,
--compress-with-encryption, -4, -6.
It lasts until vela close, a stop of the daemon, or a SIGHUP whose file does not have it (vela showconf).

  --peer HOST         peer name or address
  --vid N             circuit id, 1 to 255
  --mode tap|tun      tap (default) or tun
  --address CIDR      this side's address (repeatable, one per family)
  --mtu N             link MTU to propose
  --ifname NAME       interface name instead of vela<N>
  --bridge BR         put the tap into the existing Linux bridge BR
  --far-bridge BR     ask the listener to put its tap into its bridge BR
  --compress          offer compression (the daemon's key makes it encrypted: then
                      --compress-with-encryption instead)
  --compress-with-encryption
                      offer compression also on an encrypted circuit
  --port P            the peer's UDP port (default ${DEFAULT_PORT})
  -4, --ipv4          use only the peer's IPv4 address
  -6, --ipv6          use only the peer's IPv6 address
  --json              print the established circuit as JSON

${CONTROL_OPTIONS}
`,
  close: `Usage: vela close --peer HOST --vid N [where]

Closes a circuit of the running daemon: the peer is told (CREQ) and the interface removed.

  --peer HOST         the peer as the circuit names it (name or address)
  --vid N             circuit id
  --json              print the answer as JSON

${CONTROL_OPTIONS}
`,
  showconf: `Usage: vela showconf [where]

Prints the running configuration as a --config file (JSON): the listener settings and every circuit
this daemon initiates, those added with vela connect included. Key files appear by path. To keep
circuits added with connect across a reload or a restart:
  vela showconf > /etc/vela/vela.json && vela check-config /etc/vela/vela.json
and run the daemon with --config /etc/vela/vela.json (SIGHUP reads it again).

${CONTROL_OPTIONS}
`,
  "check-config": `Usage: vela check-config FILE

Reads FILE as vela --config would, and every key file it names (missing, unreadable, not a key, open
to other users), and exits 0 when the daemon would start from it, 1 with the reason when not.
`,
  help: `Usage: vela help [COMMAND]

The help of vela, or of one command: status, top, devices, connect, close, showconf, check-config,
genkey, completion, man, help.
`,
  completion: `Usage: vela completion bash|zsh

Prints a completion script for the shell. Install it with
  vela completion bash > /etc/bash_completion.d/vela
  vela completion zsh > "\${fpath[1]}/_vela"
`,
  man: `Usage: vela man

Prints vela's manual page (roff), made from this help: vela man > vela.1 && man ./vela.1
`,
  genkey: `Usage: vela genkey

Prints a new random key (64 hex digits, one line) for --key-file. Keep the file private (chmod 600).
`,
};
