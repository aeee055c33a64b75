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
