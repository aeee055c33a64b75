/** The default control socket path per network namespace (pure; no root). */

import assert from "node:assert/strict";
import { controlPathFor, HOST_CONTROL } from "../../src/control/socket_path.ts";

Deno.test("controlPathFor() gives the host's own namespace /run/vela/vela.sock", () => {
  assert.equal(controlPathFor({ own: 1, init: 1, named: [] }), HOST_CONTROL);
  assert.equal(controlPathFor({ own: undefined, init: undefined, named: [] }), HOST_CONTROL);
});

Deno.test("controlPathFor() gives a namespace made by ip netns a socket named after it", () => {
  const named = [{ name: "router1", inode: 7 }, { name: "router2", inode: 8 }];
  assert.equal(controlPathFor({ own: 8, init: 1, named }), "/run/vela/router2.sock");
  // init's namespace may be unreadable (a container, a sandbox): the name still tells them apart.
  assert.equal(controlPathFor({ own: 7, init: undefined, named }), "/run/vela/router1.sock");
});

Deno.test("controlPathFor() gives an unnamed namespace its inode, where init's can be read", () => {
  assert.equal(controlPathFor({ own: 9, init: 1, named: [] }), "/run/vela/netns-9.sock");
  assert.equal(controlPathFor({ own: 9, init: undefined, named: [] }), HOST_CONTROL);
});

Deno.test("controlPathFor() never builds a path from a name with a slash or a leading dot", () => {
  for (const name of ["../etc", ".hidden", "a/b", ""]) {
    assert.equal(controlPathFor({ own: 5, init: 1, named: [{ name, inode: 5 }] }), "/run/vela/netns-5.sock");
  }
});
