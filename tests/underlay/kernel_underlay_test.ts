import assert from "node:assert/strict";
import { LibcUdpSocket, openPeerSocket } from "../../ffi/udp_socket.ts";
import { endpointSockaddr, sockaddrEndpoint } from "../../src/underlay/sockaddr.ts";
import { KernelUnderlay } from "../../src/underlay/kernel_underlay.ts";
import { PacketBatch } from "../../src/packet/packet_batch.ts";
import { Errno, errno, libc } from "../../ffi/libc.ts";
import { Linux, sockaddrIn6 } from "../../ffi/structs.ts";
import { addressOf, Iovec, MMsgHdr, mmsghdrs } from "../../ffi/structs.ts";

Deno.test("endpointSockaddr() maps IPv4 into a sockaddr_in6 and sockaddrEndpoint() reads it back", () => {
  const v4 = endpointSockaddr({ address: "198.18.0.2", port: 4455 });
  assert.equal(v4.length, 28);
  assert.deepEqual([...v4.subarray(0, 4)], [10, 0, 0x11, 0x67]);
  assert.deepEqual([...v4.subarray(8, 24)], [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 198, 18, 0, 2]);
  assert.deepEqual(sockaddrEndpoint(v4), { address: "198.18.0.2", port: 4455 });
  const v6 = endpointSockaddr({ address: "fd00:198:18::2", port: 1 });
  assert.deepEqual(sockaddrEndpoint(v6), { address: "fd00:198:18::2", port: 1 });
  assert.throws(() => endpointSockaddr({ address: "router2", port: 1 }), RangeError);
});

Deno.test("mmsghdrs() points each header at its iovec, buffer and name", () => {
  const buffers = [new Uint8Array(100), new Uint8Array(200)];
  const names = [new Uint8Array(28), new Uint8Array(28)];
  const { headers, iovecs } = mmsghdrs(buffers, names);
  const h = new DataView(headers.buffer);
  const v = new DataView(iovecs.buffer);
  assert.equal(headers.length, 2 * MMsgHdr.SIZE);
  for (let i = 0; i < 2; i++) {
    assert.equal(h.getBigUint64(i * MMsgHdr.SIZE + MMsgHdr.NAME, true), addressOf(names[i]));
    assert.equal(h.getUint32(i * MMsgHdr.SIZE + MMsgHdr.NAMELEN, true), 28);
    assert.equal(
      h.getBigUint64(i * MMsgHdr.SIZE + MMsgHdr.IOV, true),
      addressOf(iovecs) + BigInt(i * Iovec.SIZE),
    );
    assert.equal(h.getBigUint64(i * MMsgHdr.SIZE + MMsgHdr.IOVLEN, true), 1n);
    assert.equal(v.getBigUint64(i * Iovec.SIZE + Iovec.BASE, true), addressOf(buffers[i]));
    assert.equal(v.getBigUint64(i * Iovec.SIZE + Iovec.LEN, true), BigInt(buffers[i].length));
  }
});

/** A received batch as [bytes, sender port] per entry. */
function entries(batch: PacketBatch): { data: number[]; source: number }[] {
  return Array.from({ length: batch.count }, (_, i) => ({
    data: [...batch.copy(i)],
    source: batch.source[i],
  }));
}

/** Receives on `underlay` socket `which` until `count` entries came (loopback is quick; a few tries). */
async function receiveAll(underlay: KernelUnderlay, which: number, batch: PacketBatch, count: number) {
  const got: { data: number[]; source: number }[] = [];
  for (let tries = 0; got.length < count && tries < 100; tries++) {
    underlay.receive(batch, which);
    got.push(...entries(batch));
    if (got.length < count) await new Promise((resolve) => setTimeout(resolve, 5));
  }
  return got;
}

Deno.test("KernelUnderlay receives a batch with recvmmsg and tells known senders by address id", async () => {
  const a = LibcUdpSocket.bind(0);
  const b = LibcUdpSocket.bind(0);
  try {
    assert.ok(a.port > 0 && b.port > 0 && a.port !== b.port);
    const underlay = new KernelUnderlay(b.fd, false);
    const route = underlay.attach({ address: "127.0.0.1", port: a.port });
    const known = underlay.addressOf(route);
    assert.ok(known >= 0);
    const to = endpointSockaddr({ address: "127.0.0.1", port: b.port });
    for (let i = 0; i < 5; i++) assert.ok(a.sendTo(new Uint8Array([i + 1, 9, 9]), 2 + (i % 2), to));
    assert.ok(a.sendTo(new Uint8Array([0, 1]), 2, endpointSockaddr({ address: "::1", port: b.port })));
    const batch = new PacketBatch({ buffers: 8, maxPacket: 2048 });
    const got = await receiveAll(underlay, 0, batch, 6);
    assert.deepEqual(got.slice(0, 5).map((g) => g.data), [[1, 9], [2, 9, 9], [3, 9], [4, 9, 9], [5, 9]]);
    assert.deepEqual(got.slice(0, 5).map((g) => g.source), Array(5).fill(known));
    assert.deepEqual(got[5], { data: [0, 1], source: -1 }, "::1 is no known address");
    assert.deepEqual(underlay.endpoint(batch, batch.count - 1), { address: "::1", port: a.port });
  } finally {
    a.close();
    b.close();
    a.close();
  }
});

Deno.test("KernelUnderlay sends a run of equal datagrams with UDP GSO, and they arrive one by one", async () => {
  const a = LibcUdpSocket.bind(0);
  const b = LibcUdpSocket.bind(0);
  try {
    const sender = new KernelUnderlay(a.fd, true);
    const receiver = new KernelUnderlay(b.fd, false);
    const route = sender.attach({ address: "127.0.0.1", port: b.port });
    const out = new PacketBatch({ buffers: 8, maxPacket: 2048 });
    for (let i = 0; i < 7; i++) {
      const at = out.packetStart(i);
      out.offset[i] = at;
      out.length[i] = i < 6 ? 100 : 40; // six of one size, the last shorter
      out.memory.fill(i + 1, at, at + out.length[i]);
    }
    out.count = 7;
    assert.equal(sender.send(out, 0, 7, route), 7);
    const got = await receiveAll(receiver, 0, new PacketBatch({ buffers: 8, maxPacket: 2048 }), 7);
    assert.deepEqual(got.map((g) => g.data.length), [100, 100, 100, 100, 100, 100, 40]);
    assert.deepEqual(got.map((g) => g.data[0]), [1, 2, 3, 4, 5, 6, 7]);
  } finally {
    a.close();
    b.close();
  }
});

Deno.test("binding a libc UDP socket to a port in use throws AddrInUse", () => {
  const a = LibcUdpSocket.bind(0);
  try {
    assert.throws(() => LibcUdpSocket.bind(a.port), Deno.errors.AddrInUse);
  } finally {
    a.close();
  }
});

Deno.test("a peer socket on the shared port gets its peer's datagrams, and the shared socket everyone else's", async () => {
  const shared = LibcUdpSocket.bind(0);
  const peer = LibcUdpSocket.bind(0);
  const stranger = LibcUdpSocket.bind(0);
  const c = libc();
  const fd = openPeerSocket(shared.port, endpointSockaddr({ address: "127.0.0.1", port: peer.port }));
  try {
    const to = endpointSockaddr({ address: "127.0.0.1", port: shared.port });
    assert.ok(peer.sendTo(new Uint8Array([1, 1]), 2, to));
    assert.ok(stranger.sendTo(new Uint8Array([2, 2, 2]), 3, to));
    // Loopback delivers within sendto: both datagrams are queued by now.
    const buffer = new Uint8Array(64);
    assert.equal(Number(c.read(fd, buffer, 64n)), 2);
    assert.deepEqual([...buffer.subarray(0, 2)], [1, 1]);
    assert.equal(Number(c.read(fd, buffer, 64n)), -1, "the stranger's datagram went to the peer socket");
    const sharedUnderlay = new KernelUnderlay(shared.fd, false);
    const batch = new PacketBatch({ buffers: 4, maxPacket: 2048 });
    assert.deepEqual((await receiveAll(sharedUnderlay, 0, batch, 1)).map((g) => g.data), [[2, 2, 2]]);
    assert.deepEqual(sharedUnderlay.endpoint(batch, 0), { address: "127.0.0.1", port: stranger.port });

    // Sent without an address, from the shared port.
    assert.equal(Number(c.write(fd, new Uint8Array([3]), 1n)), 1);
    const peerUnderlay = new KernelUnderlay(peer.fd, false);
    assert.deepEqual((await receiveAll(peerUnderlay, 0, batch, 1)).map((g) => g.data), [[3]]);
    assert.deepEqual(peerUnderlay.endpoint(batch, 0), { address: "127.0.0.1", port: shared.port });
  } finally {
    c.close(fd);
    shared.close();
    peer.close();
    stranger.close();
  }
});

Deno.test("a socket with SO_REUSEADDR can bind neither the shared socket's port nor one address of it", () => {
  const shared = LibcUdpSocket.bind(0);
  const c = libc();
  try {
    for (
      const address of [new Uint8Array(16), new Uint8Array([...Array(10).fill(0), 0xff, 0xff, 127, 0, 0, 1])]
    ) {
      const fd = c.socket(Linux.AF_INET6, Linux.SOCK_DGRAM, 0);
      assert.ok(fd >= 0);
      try {
        assert.equal(
          c.setsockopt(fd, Linux.SOL_SOCKET, 2, /* SO_REUSEADDR */ new Uint8Array([1, 0, 0, 0]), 4),
          0,
        );
        const name = sockaddrIn6(address, shared.port);
        assert.equal(c.bind(fd, name, name.length), -1, "the port was shared with a stranger");
        assert.equal(errno(), Errno.EADDRINUSE);
      } finally {
        c.close(fd);
      }
    }
  } finally {
    shared.close();
  }
});
