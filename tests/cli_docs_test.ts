/** The man page and shell completions, made from the help and the option tables (no root). */

import assert from "node:assert/strict";
import { DAEMON_OPTIONS, SUBCOMMAND_OPTIONS, SUBCOMMANDS } from "../src/cli.ts";
import { bashCompletion, manPage, zshCompletion } from "../src/cli_docs.ts";

async function run(program: string, args: string[], stdin?: string) {
  const child = new Deno.Command(program, { args, stdin: "piped", stdout: "piped", stderr: "piped" }).spawn();
  const writer = child.stdin.getWriter();
  if (stdin !== undefined) await writer.write(new TextEncoder().encode(stdin));
  await writer.close();
  const out = await child.output();
  return {
    code: out.code,
    stdout: new TextDecoder().decode(out.stdout),
    stderr: new TextDecoder().decode(out.stderr),
  };
}

async function has(program: string): Promise<boolean> {
  return (await run("sh", ["-c", `command -v ${program}`])).code === 0;
}

/** What bash completes for the words typed so far (the last one being completed). */
async function bashCompletes(words: string[]): Promise<string[]> {
  const script = `${bashCompletion()}
COMP_WORDS=(${words.map((w) => `'${w}'`).join(" ")}); COMP_CWORD=${words.length - 1}; _vela
printf '%s\\n' "\${COMPREPLY[@]}"`;
  const result = await run("bash", ["-c", script]);
  assert.equal(result.code, 0, result.stderr);
  return result.stdout.split("\n").filter((w) => w !== "");
}

Deno.test("bashCompletion() is valid bash that completes commands, options and their values", async () => {
  assert.equal((await run("bash", ["-n"], bashCompletion())).code, 0);
  assert.deepEqual(await bashCompletes(["vela", "sta"]), ["status"]);
  assert.deepEqual(await bashCompletes(["vela", "status", "--wa"]), ["--watch"]);
  assert.deepEqual(await bashCompletes(["vela", "--mode", "t"]), ["tap", "tun"]);
  assert.deepEqual(await bashCompletes(["vela", "--ciph"]), ["--cipher"]);
  assert.deepEqual(
    await bashCompletes(["vela", "completion", ""]).then((w) => w.filter((x) => !x.startsWith("-"))),
    [
      "bash",
      "zsh",
    ],
  );
});

Deno.test("the completions name every option of every command", () => {
  const bash = bashCompletion(), zsh = zshCompletion();
  for (const name of Object.keys(DAEMON_OPTIONS)) {
    assert.ok(bash.includes(`--${name}`) && zsh.includes(`'--${name}[`), `--${name}`);
  }
  for (const command of SUBCOMMANDS) {
    assert.ok(bash.includes(`${command})`), command);
    for (const name of Object.keys(SUBCOMMAND_OPTIONS[command])) assert.ok(bash.includes(`--${name}`));
  }
});

Deno.test("zshCompletion() is valid zsh where zsh is installed", async (t) => {
  if (!(await has("zsh"))) {
    console.warn("zsh is not installed: the zsh script is checked only for its words");
    assert.match(zshCompletion(), /^#compdef vela\n/);
    return;
  }
  await t.step("zsh -n", async () => assert.equal((await run("zsh", ["-n"], zshCompletion())).code, 0));
});

Deno.test("manPage() has every command's help and renders without groff warnings", async () => {
  const page = manPage("9.9.9");
  assert.match(page, /^\.TH VELA 8 "" "vela 9\.9\.9"/);
  for (const command of SUBCOMMANDS) {
    assert.ok(page.includes(`.SS vela ${command.replace(/-/g, "\\-")}`), command);
  }
  if (!(await has("groff"))) {
    console.warn("groff is not installed: the man page is not rendered");
    return;
  }
  const rendered = await run("groff", ["-man", "-Tutf8", "-ww", "-z"], page);
  assert.equal(rendered.code, 0);
  assert.equal(rendered.stderr, "", rendered.stderr);
});
