/**
 * Untrusted text, made safe to put in a message or on a terminal (STYLE.md §20). What a server, a
 * publisher or a device says reaches error messages, statuses and `esp-ota status` output; there
 * it must neither grow a message past what its schema allows (issue 12, defect 1: a 60 KB
 * manifest key quoted into E_MANIFEST_SCHEMA made the device's status unencodable) nor drive the
 * reader's terminal (defect 8: escape sequences in a device's app descriptor). Pure.
 */

/**
 * How much of an untrusted text a message quotes by default: enough to recognise it (a URL's
 * host and the start of its path, a key's first words), too little to carry a payload.
 */
export const QUOTE_MAX = 120;

/**
 * Characters that are never printed as they are: C0 controls (ESC starts terminal sequences; CR,
 * LF and TAB forge lines and columns), DEL, C1 controls (0x9B is a one-byte CSI on some
 * terminals), the Unicode line and paragraph separators, and the bidirectional embedding,
 * override and isolate marks that reorder what is shown (Trojan Source, CVE-2021-42574).
 */
// biome-ignore lint/suspicious/noControlCharactersInRegex: matching control characters is the point.
const UNSAFE = /[\u0000-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/;
// biome-ignore lint/suspicious/noControlCharactersInRegex: matching control characters is the point.
const UNSAFE_ALL = /[\u0000-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g;

function escapeChar(c: string): string {
  const n = c.charCodeAt(0);
  return n < 0x100
    ? `\\x${n.toString(16).padStart(2, "0")}`
    : `\\u${n.toString(16).padStart(4, "0")}`;
}

/**
 * `text` with every control and reordering character escaped (`\x1b`, `\u202e`), for printing
 * on a terminal. Every text renderer uses it for what came from the network or a device; JSON
 * output needs it not (JSON.stringify escapes C0 controls, and the reader's tool decodes them).
 */
export function printable(text: string): string {
  return UNSAFE.test(text) ? text.replace(UNSAFE_ALL, escapeChar) : text;
}

/**
 * Untrusted `text` as a message may quote it: control characters escaped (printable), and cut
 * after `max` characters with a mark saying how long the original was. The result is at most
 * `max` + 32 characters whatever `text` is, and the work is bounded by `max`, not by `text`.
 */
export function quote(text: string, max = QUOTE_MAX): string {
  if (!Number.isSafeInteger(max) || max < 1)
    throw new RangeError("quote: max must be a positive integer");
  let out = "";
  let used = 0;
  // By code point, so a cut never splits a surrogate pair; escapes are never split either.
  for (const ch of text) {
    const piece = UNSAFE.test(ch) ? escapeChar(ch) : ch;
    if (out.length + piece.length > max) break;
    out += piece;
    used += ch.length;
  }
  return used < text.length ? `${out}…(cut, ${text.length} characters)` : out;
}
