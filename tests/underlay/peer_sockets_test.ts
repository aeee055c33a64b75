import assert from "node:assert/strict";
import { PeerSockets } from "../../src/underlay/peer_sockets.ts";

/** PeerSockets over a fake opener that hands out numbered descriptors and records what it closed. */
function fakeSockets(max?: number, refuse?: string) {
  let next = 100;
  const opened: string[] = [];
  const closed: number[] = [];
  const sockets = new PeerSockets(
    (peer) => {
      if (peer.address === refuse) throw new Error("connect refused");
      opened.push(`${peer.address}|${peer.port}`);
      return next++;
    },
    (fd) => closed.push(fd),
    max,
  );
  return { sockets, opened, closed };
}

Deno.test("PeerSockets shares one socket among a peer's circuits and closes it with the last", () => {
  const { sockets, opened, closed } = fakeSockets();
  const first = sockets.acquire({ address: "198.18.0.2", port: 4455 })!;
  const second = sockets.acquire({ address: "198.18.0.2", port: 4455 })!;
  const other = sockets.acquire({ address: "198.18.0.2", port: 4456 })!;
  assert.equal(first, second);
  assert.notEqual(first.fd, other.fd);
  assert.deepEqual(opened, ["198.18.0.2|4455", "198.18.0.2|4456"]);
  sockets.release(first);
  assert.deepEqual(closed, [], "one circuit still uses it");
  sockets.release(second);
  assert.deepEqual(closed, [first.fd]);
  assert.equal(sockets.size, 1);
  // The next circuit to that peer gets a new socket.
  assert.notEqual(sockets.acquire({ address: "198.18.0.2", port: 4455 })!.fd, first.fd);
});

Deno.test("PeerSockets opens none beyond its ceiling or where opening fails", () => {
  const { sockets, opened } = fakeSockets(2, "fd00::9");
  assert.ok(sockets.acquire({ address: "198.18.0.2", port: 4455 }));
  assert.equal(sockets.acquire({ address: "fd00::9", port: 4455 }), undefined);
  assert.ok(sockets.acquire({ address: "198.18.0.3", port: 4455 }));
  assert.equal(sockets.acquire({ address: "198.18.0.4", port: 4455 }), undefined);
  assert.ok(sockets.acquire({ address: "198.18.0.3", port: 4455 }), "a peer that has one still shares it");
  assert.deepEqual(opened, ["198.18.0.2|4455", "198.18.0.3|4455"]);
});

Deno.test("PeerSockets.close() closes every socket once, and a later release closes nothing more", () => {
  const { sockets, closed } = fakeSockets();
  const a = sockets.acquire({ address: "198.18.0.2", port: 4455 })!;
  const b = sockets.acquire({ address: "198.18.0.3", port: 4455 })!;
  sockets.close();
  sockets.close();
  assert.deepEqual(closed.sort(), [a.fd, b.fd].sort());
  sockets.release(a);
  assert.equal(closed.length, 2);
});
