/** Every timing constant of VELA, in milliseconds, in one place. */

/** First IREQ retransmission after this long without an answer. */
export const IREQ_FIRST_RETRY_MS = 500;
/** IREQ retransmissions back off by doubling up to this interval. */
export const IREQ_MAX_RETRY_MS = 8_000;
/** After a NAK the initiator asks again only after this long. */
export const NAK_RETRY_MS = 30_000;
/** A daemon stopping waits at most this long for its CREQs to leave before it exits. */
export const SHUTDOWN_GRACE_MS = 500;
/** At most one log line per this interval for each kind of dropped datagram. */
export const DROP_LOG_INTERVAL_MS = 10_000;
/** Each end of an established circuit sends a KEEPALIVE this often. */
export const KEEPALIVE_INTERVAL_MS = 2_000;
/** The peer is dead after this long without a KEEPALIVE; the check runs at each keepalive tick, so 6 to 8 s. */
export const DEAD_PEER_MS = 3 * KEEPALIVE_INTERVAL_MS;
/** A listener keeps the interface of a dead initiator this long, waiting for it to come back. */
export const RESPONDER_LINGER_MS = 60_000;
/** An initiator re-resolves its peer's name this often (and whenever the peer is dead). */
export const DNS_REFRESH_MS = 60_000;
/** With a key, IREQs whose timestamp is further than this from the receiver's wall clock are refused as stale. */
export const REPLAY_WINDOW_MS = 30_000;
/**
 * Session keys (src/session.ts): the initiator makes new ones by a new handshake this long after the
 * current ones were made (--rekey-after changes it, at most MAX_REKEY_AFTER_MS), or sooner when they have
 * sealed half of what the cipher allows (src/crypto/data_keys.ts).
 */
export const REKEY_AFTER_MS = 100_000;
export const MAX_REKEY_AFTER_MS = 120_000;
export const MIN_REKEY_AFTER_MS = 1_000;
/** After new keys, the previous ones still open frames this long (those already on their way). */
export const KEY_OVERLAP_MS = 10_000;
/** An initiator that has sent this many IREQs without an answer says so in the log (once per attempt). */
export const UNANSWERED_IREQS = 4;
/** IREQs accepted per second from one source address, and the burst above that. */
export const IREQ_RATE_PER_SECOND = 5;
export const IREQ_BURST = 10;
/**
 * IREQs accepted per second, and the burst, from a source that proved itself: with a key, any IREQ whose
 * MAC verified; without one, an address that has a circuit up here already. A router that brings up 255
 * circuits at once (one per vid) is let through in one burst.
 */
export const TRUSTED_IREQ_RATE_PER_SECOND = 100;
export const TRUSTED_IREQ_BURST = 255;
/**
 * Control datagrams from addresses without a circuit here: each datapath Worker hands up at most this
 * many a second (src/datapath/control_queue.ts), and the daemon looks at most at STRANGER_RATE_PER_SECOND
 * a second from any one of them (src/daemon/admission.ts), before it checks a MAC.
 */
export const STRANGER_CONTROL_PER_SECOND = 500;
export const STRANGER_CONTROL_BURST = 300;
export const STRANGER_RATE_PER_SECOND = 50;
export const STRANGER_BURST = 300;

/**
 * The time slice each datapath Worker asks the scheduler for under --no-offload (ffi/scheduling.ts, Linux
 * 6.12 and later; the default slice is 0.7-3 ms). Without offloads a batch is dozens of small frames, and
 * when iperf3 and both Workers share two cores a longer slice means fewer preemptions in the middle of
 * one: TCP carried 1627 Mbit/s on average with 10 ms against 1434 with the default (10 runs each,
 * alternating), 1539 with 3 ms, and a quarter less with 0.1 ms; it took both Workers (the sending one
 * alone gained nothing). With offloads the same slice cost 20-25% (a superframe written to the device
 * wants its reader to run at once), so there the Workers keep the default. It is not a priority: the
 * Workers' share of the CPU is unchanged.
 */
export const NO_OFFLOAD_TIME_SLICE_MS = 10;

/**
 * Send moderation (src/datapath/send_moderation.ts): while the devices of a sending Worker hand it at least this
 * many bits per second, measured over windows of MODERATION_WINDOW_MS, the Worker waits
 * MODERATION_WAIT_US after each wake-up before it drains them (--moderation-us changes the wait, 0 turns it
 * off). Below the rate, or after a pause of a window, it drains at once. On the 2-core bed 150 us took the
 * sending Worker from 38% to 27% of a core at 70k UDP packets/s and lowered iperf3's UDP loss (60 us
 * helped little, 400 us less than 150; bench/README.md). Without offloads (--no-offload) the default is no
 * wait: there it cost TCP 4-5% in two of three comparisons.
 */
export const MODERATION_BULK_BITS_PER_SECOND = 200_000_000;
export const MODERATION_WINDOW_MS = 2;
export const MODERATION_WAIT_US = 150;

/** Stopping, the main isolate waits this long for the datapath Workers to say they stopped. */
export const WORKER_STOP_MS = 3_000;

/**
 * A control socket client has this long from connecting, and from each reply, to send its next whole
 * command line, or it is disconnected: bytes that trickle in do not keep it open.
 */
export const CONTROL_COMMAND_MS = 30_000;
/** After a failed accept() (out of file descriptors, say) the control socket tries again after this, doubling up to the max. */
export const CONTROL_ACCEPT_RETRY_MS = 50;
export const CONTROL_ACCEPT_MAX_RETRY_MS = 2_000;
/**
 * Starting, a daemon that finds a control socket file asks it VERSION? and waits this long for an answer;
 * a socket that accepts but never answers (a daemon killed a moment ago, still closing its descriptors)
 * is asked again until CONTROL_TAKEOVER_MS, then taken over once it stops accepting.
 */
export const CONTROL_PROBE_MS = 250;
export const CONTROL_TAKEOVER_MS = 3_000;
/** A control reply that cannot be written within this long is abandoned with its client. */
export const CONTROL_WRITE_MS = 5_000;
/** How long a subcommand waits for the daemon's reply. */
export const CONTROL_REPLY_MS = 10_000;
/** How long `vela connect` waits for the new circuit to be established, asking this often. */
export const CONNECT_WAIT_MS = 15_000;
export const CONNECT_POLL_MS = 200;
/**
 * Reassembly (src/datapath/fragmentation.ts): a frame whose fragments have not all come this long after
 * the first is given up and counted; the datapath looks for such frames at most this often.
 */
export const REASSEMBLY_TIMEOUT_MS = 500;
export const REASSEMBLY_SWEEP_MS = 100;
/**
 * Path MTU probing (src/daemon/path_probe.ts): a probe unanswered this long is sent again, up to
 * PROBE_TRIES times before its size counts as too big; a settled path is probed again this often.
 */
export const PROBE_TIMEOUT_MS = 500;
export const PROBE_TRIES = 3;
export const PROBE_INTERVAL_MS = 600_000;
/**
 * Remote control (--control-listen, src/control/remote_server.ts): a client has this long from connecting
 * to finish its handshake (its hello and its proof of the key), or it is disconnected; then each command
 * has CONTROL_COMMAND_MS, as on the control socket.
 */
export const REMOTE_CONTROL_HANDSHAKE_MS = 5_000;
/** A refused remote client is given this long to read its refusal line and hang up before it is cut off. */
export const REMOTE_CONTROL_LINGER_MS = 1_000;
/**
 * Remote control connections accepted per second from one source address (an IPv6 source by its /64),
 * and the burst above that; one more is refused before any key is looked at.
 */
export const REMOTE_CONTROL_RATE_PER_SECOND = 2;
export const REMOTE_CONTROL_BURST = 10;
/** Refused remote control connections logged per second, and the burst; the next line counts the rest. */
export const REMOTE_CONTROL_REFUSAL_LOGS_PER_SECOND = 1;
export const REMOTE_CONTROL_REFUSAL_LOG_BURST = 20;

/**
 * The compression stage's dictionary mode (src/datapath/compress_stage.ts): how often the daemon looks
 * whether the receiving side holds a new dictionary of the peer's frames, and how often it tells the peer
 * again (DACK) while the peer's frames do not use it yet.
 */
export const DICTIONARY_POLL_MS = 25;
export const DICTIONARY_ACK_RESEND_MS = 500;
/** How long a sender waits for the DACK of a dictionary it sent whole before it builds another. */
export const DICTIONARY_ACK_MS = 300;
