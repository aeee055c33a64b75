/**
 * The manual page and the shell completions, made from the help texts (src/cli_help.ts) and the option
 * tables (src/cli.ts), so that they always say what the parser takes. Pure.
 */

import { DAEMON_OPTIONS, SUBCOMMAND_OPTIONS, SUBCOMMANDS } from "./cli.ts";
import { COMMAND_HELP, HELP } from "./cli_help.ts";

type Table = Record<string, { type: "string" | "boolean"; short?: string }>;

/** The words an option's value may be, where they are few. */
const VALUE_WORDS: Record<string, string[]> = {
  mode: ["tap", "tun"],
  cipher: ["auto", "aes-256-gcm", "chacha20-poly1305", "none"],
  underlay: ["libc", "deno"],
  "datapath-threads": ["1", "2"],
};

/** Options whose value is a file. */
const FILE_OPTIONS = ["key-file", "config", "control", "control-key", "control-read-key"];

function flags(table: Table): string[] {
  return Object.entries(table).flatMap((
    [name, spec],
  ) => [`--${name}`, ...(spec.short ? [`-${spec.short}`] : [])]);
}

/** A bash completion script: `complete -F _vela vela`. */
export function bashCompletion(): string {
  const cases = SUBCOMMANDS.map((name) =>
    `    ${name}) opts="${flags(SUBCOMMAND_OPTIONS[name] as Table).join(" ")}${
      name === "help" ? ` ${SUBCOMMANDS.join(" ")}` : name === "completion" ? " bash zsh" : ""
    }" ;;`
  ).join("\n");
  const values = Object.entries(VALUE_WORDS).map(([name, words]) =>
    `    --${name}) COMPREPLY=($(compgen -W "${words.join(" ")}" -- "$cur")); return ;;`
  ).join("\n");
  return `# bash completion for vela (vela completion bash > /etc/bash_completion.d/vela)
_vela() {
  local cur prev opts
  cur="\${COMP_WORDS[COMP_CWORD]}"
  prev="\${COMP_WORDS[COMP_CWORD-1]}"
  case "$prev" in
${values}
    ${FILE_OPTIONS.map((name) => `--${name}`).join("|")}) COMPREPLY=($(compgen -f -- "$cur")); return ;;
  esac
  if [ "$COMP_CWORD" -eq 1 ] && [[ "$cur" != -* ]]; then
    COMPREPLY=($(compgen -W "${SUBCOMMANDS.join(" ")}" -- "$cur"))
    return
  fi
  case "\${COMP_WORDS[1]}" in
${cases}
    *) opts="${flags(DAEMON_OPTIONS).join(" ")}" ;;
  esac
  if [ "\${COMP_WORDS[1]}" = check-config ] && [[ "$cur" != -* ]]; then
    COMPREPLY=($(compgen -f -- "$cur"))
    return
  fi
  COMPREPLY=($(compgen -W "$opts" -- "$cur"))
}
complete -F _vela vela
`;
}

/** A zsh completion script (#compdef vela), the same words as bash's. */
export function zshCompletion(): string {
  const options = (table: Table) =>
    Object.entries(table).map(([name, spec]) => {
      const value = VALUE_WORDS[name]
        ? `:${name}:(${VALUE_WORDS[name].join(" ")})`
        : FILE_OPTIONS.includes(name)
        ? `:${name}:_files`
        : spec.type === "string"
        ? `:${name}:`
        : "";
      return `'--${name}[${name}]${value}'`;
    }).join(" \\\n        ");
  const cases = SUBCOMMANDS.map((name) =>
    `    (${name})\n      _arguments ${options(SUBCOMMAND_OPTIONS[name] as Table)}${
      name === "check-config" ? " \\\n        '1:file:_files'" : ""
    } ;;`
  ).join("\n");
  return `#compdef vela
# zsh completion for vela (vela completion zsh > "\${fpath[1]}/_vela")
_vela() {
  if (( CURRENT == 2 )) && [[ $words[2] != -* ]]; then
    _values command ${SUBCOMMANDS.join(" ")}
    return
  fi
  case $words[2] in
${cases}
    (*)
      _arguments ${options(DAEMON_OPTIONS)} ;;
  esac
}
_vela "$@"
`;
}

/** Escapes text for roff: backslashes, and a dot or quote at the start of a line. */
function roff(text: string): string {
  return text.replace(/\\/g, "\\e").replace(/-/g, "\\-").split("\n").map((line) =>
    /^[.']/.test(line) ? `\\&${line}` : line
  ).join("\n");
}

/** The manual page vela(8), in roff: the help text, then each command's. */
export function manPage(version: string): string {
  const [title, ...rest] = HELP.trim().split("\n");
  const sections = rest.join("\n").trim().split(/\n\n+/);
  const out = [
    `.TH VELA 8 "" "vela ${version}" "System Administration"`,
    ".SH NAME",
    `vela \\- ${roff(title.replace(/^VELA, /, ""))}`,
  ];
  for (const section of sections) {
    const [first, ...body] = section.split("\n");
    if (/^[A-Z][^:]*:$/.test(first)) {
      out.push(`.SH ${roff(first.slice(0, -1).toUpperCase())}`, ".nf", roff(body.join("\n")), ".fi");
    } else {
      out.push(".PP", ".nf", roff(section), ".fi");
    }
  }
  out.push(".SH COMMANDS");
  for (const name of SUBCOMMANDS) {
    out.push(`.SS vela ${roff(name)}`, ".nf", roff(COMMAND_HELP[name].trim()), ".fi");
  }
  out.push(".SH SEE ALSO", "README.md and docs/PROTOCOL.md in VELA's source.");
  return out.join("\n") + "\n";
}
