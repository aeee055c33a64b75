/** Small things the control socket and remote control both do with a connection. */

/** Writes all of `bytes` to a connection (a stream whose write() may take only part). */
export async function writeAllTo(
  conn: { write(p: Uint8Array): Promise<number> },
  bytes: Uint8Array,
): Promise<void> {
  let offset = 0;
  while (offset < bytes.length) offset += await conn.write(bytes.subarray(offset));
}

/**
 * Writes all of `bytes` with `write` (writeAllTo for a connection, a channel's own write), or gives up
 * (false) after `ms` or on an error.
 */
export async function writeWithin(write: () => Promise<void>, ms: number): Promise<boolean> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<false>((resolve) => timer = setTimeout(() => resolve(false), ms));
  const written = write().then(() => true, () => false);
  try {
    return await Promise.race([written, late]);
  } finally {
    clearTimeout(timer);
  }
}

/** Closes a connection, ignoring that it may be closed already. */
export function closeQuietly(conn: { close(): void }): void {
  try {
    conn.close();
  } catch {
    // Already closed.
  }
}
