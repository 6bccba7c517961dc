/**
 * `npm run bench:crypto`: throughput of flash encryption (both schemes), SHA-256 and signature
 * verification over a 1.3 MB image, next to node:crypto's raw AES measured in the same run. The
 * figures and the machine they came from are recorded in docs/benchmarks.md.
 *
 * Method: every case is timed call by call, cases interleaved round by round (so a GC pause or a
 * CPU frequency change hits all of them alike), after warm-up; the median is reported. A single
 * 1.3 MB AES pass takes about 0.3 ms, where one page-fault storm or GC costs more than that, so
 * medians, not means. MB = 10^6 bytes.
 *
 * Ends with one line per performance target and exits 1 if one fails.
 */
import { createCipheriv, createDecipheriv, createHash } from "node:crypto";
import { cpus } from "node:os";
import { sha256 as nobleSha256 } from "@noble/hashes/sha2.js";
import { createFlashCipher, createFlashCipherJsKernel } from "../../src/esp/flash-encryption.js";
import { parseSigningKey } from "../../src/esp/keys.js";
import { verifySignedV1 } from "../../src/esp/secure-boot-v1.js";
import { signDataV2, verifySignedV2 } from "../../src/esp/secure-boot-v2.js";
import { fixture } from "../helpers/fixtures.js";

// The image: the 1 371 451-byte SBv1 vector (pseudo-random, see test/fixtures/README.md), padded
// with 0xFF to a multiple of 16 as flash data always is. Its signed form is the SBv1 vector itself.
const raw = fixture("sbv1/data_1371451.bin");
const image = new Uint8Array(raw.length + ((16 - (raw.length % 16)) % 16)).fill(0xff);
image.set(raw);
const N = image.length;

const xtsKey512 = fixture("flash_encryption/fe_xts_key512.bin");
const xtsKey256 = fixture("flash_encryption/fe_xts_key256.bin");
const esp32Key = fixture("flash_encryption/fe_esp32_key256.bin");
const ADDRESS = 0x110000;

interface Case {
  readonly name: string;
  readonly run: () => unknown;
  readonly times: number[];
}

function cases(list: [string, () => unknown][]): Case[] {
  return list.map(([name, run]) => ({ name, run, times: [] }));
}

/** Runs `rounds` rounds of every case (after `warmup` untimed rounds), interleaved. */
function measure(group: Case[], rounds: number, warmup: number): void {
  for (let r = 0; r < warmup + rounds; r++) {
    for (const c of group) {
      const t0 = process.hrtime.bigint();
      c.run();
      const ms = Number(process.hrtime.bigint() - t0) / 1e6;
      if (r >= warmup) c.times.push(ms);
    }
  }
}

function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[s.length >> 1]!;
}

const mbps = (ms: number, bytes = N) => bytes / 1e6 / (ms / 1000);

// --- AES: raw node:crypto baselines and ours, interleaved -------------------------------------
const xts512 = createFlashCipher({ scheme: "xts", key: xtsKey512 });
const xts256 = createFlashCipher({ scheme: "xts", key: xtsKey256 });
const xts512js = createFlashCipherJsKernel({ scheme: "xts", key: xtsKey512 });
const esp32 = createFlashCipher({ scheme: "esp32", key: esp32Key });
const zeroIv = Buffer.alloc(16);

const fast = cases([
  [
    "raw node:crypto AES-256-ECB",
    () =>
      createCipheriv("aes-256-ecb", xtsKey512.subarray(0, 32), null)
        .setAutoPadding(false)
        .update(image),
  ],
  [
    "raw node:crypto AES-256-XTS",
    () => {
      const c = createCipheriv("aes-256-xts", xtsKey512, zeroIv);
      return [c.update(image), c.final()];
    },
  ],
  [
    "raw node:crypto AES-128-XTS",
    () => {
      const c = createCipheriv("aes-128-xts", xtsKey256, zeroIv);
      return [c.update(image), c.final()];
    },
  ],
  ["XTS-AES-256 encrypt (64-byte key)", () => xts512.encrypt(ADDRESS, image)],
  ["XTS-AES-256 decrypt (64-byte key)", () => xts512.decrypt(ADDRESS, image)],
  ["XTS-AES-128 encrypt (32-byte key)", () => xts256.encrypt(ADDRESS, image)],
  ["SHA-256 node:crypto", () => createHash("sha256").update(image).digest()],
]);

// --- Slower cases: fewer rounds ----------------------------------------------------------------
/** Rejected design, for the record: one node:crypto aes-256-xts context per 128-byte unit. */
function xtsPerUnit(cipherKey: Uint8Array, data: Uint8Array): Uint8Array {
  const out = new Uint8Array(data.length);
  const tweak = Buffer.alloc(16);
  const unit = Buffer.alloc(128);
  for (let o = 0; o + 128 <= data.length; o += 128) {
    tweak.writeUInt32LE(ADDRESS + o);
    unit.set(data.subarray(o, o + 128));
    unit.reverse();
    const c = createCipheriv("aes-256-xts", cipherKey, tweak);
    out.set(c.update(unit).reverse(), o);
  }
  return out;
}

/** Rejected design, for the record: ESP32 scheme with one node:crypto context per 32 bytes. */
function esp32PerBlockContext(data: Uint8Array): void {
  for (let o = 0; o < data.length; o += 32) {
    const d = createDecipheriv("aes-256-ecb", esp32Key, null).setAutoPadding(false);
    d.update(data.subarray(o, o + 32));
  }
}

const slow = cases([
  ["ESP32 encrypt (AES-256, FLASH_CRYPT_CONFIG 0xF)", () => esp32.encrypt(ADDRESS, image)],
  ["ESP32 decrypt (AES-256, FLASH_CRYPT_CONFIG 0xF)", () => esp32.decrypt(ADDRESS, image)],
  ["XTS-AES-256 encrypt, plain JS kernel", () => xts512js.encrypt(ADDRESS, image)],
  ["SHA-256 @noble/hashes", () => nobleSha256(image)],
]);

const rejected = cases([
  ["rejected: XTS, one aes-256-xts context per 128-byte unit", () => xtsPerUnit(xtsKey512, image)],
  ["rejected: ESP32, one AES-256-ECB context per 32 bytes", () => esp32PerBlockContext(image)],
]);

// --- Signature verification of the 1.3 MB image -------------------------------------------------
const sbv1Key = parseSigningKey(fixture("sbv1/sbv1_key.pem"));
const sbv1Signed = fixture("sbv1/data_1371451.signed.bin");
const rsaKey = parseSigningKey(fixture("sbv2/sbv2_rsa3072_key.pem"));
const ecKey = parseSigningKey(fixture("sbv2/sbv2_ecdsa256_key.pem"));
const sbv2Rsa = signDataV2(raw, [rsaKey]);
const sbv2Ec = signDataV2(raw, [ecKey]);
const mustVerify = (r: { ok: boolean }, what: string) => {
  if (!r.ok) throw new Error(`bench: ${what} did not verify`);
};
const signatures = cases([
  ["SBv1 ECDSA P-256 verify", () => mustVerify(verifySignedV1(sbv1Signed, sbv1Key), "SBv1")],
  ["SBv2 RSA-3072-PSS verify", () => mustVerify(verifySignedV2(sbv2Rsa, rsaKey), "SBv2 RSA")],
  ["SBv2 ECDSA P-256 verify", () => mustVerify(verifySignedV2(sbv2Ec, ecKey), "SBv2 ECDSA")],
]);

// Correctness before speed: the fast paths must agree with each other.
const check = (a: Uint8Array, b: Uint8Array, what: string) => {
  if (Buffer.compare(a, b) !== 0) throw new Error(`bench: ${what} disagree`);
};
check(xts512.encrypt(ADDRESS, image), xts512js.encrypt(ADDRESS, image), "SIMD and JS XTS kernels");
const units = image.subarray(0, N - (N % 128));
check(xts512.encrypt(ADDRESS, units), xtsPerUnit(xtsKey512, units), "XTS and per-unit aes-xts");
check(esp32.decrypt(ADDRESS, esp32.encrypt(ADDRESS, image)), image, "ESP32 round trip");

measure(fast, 300, 30);
measure(slow, 15, 3);
measure(rejected, 3, 1);
measure(signatures, 15, 3);

// --- Report -------------------------------------------------------------------------------------
const ms = (c: Case) => median(c.times);
const find = (name: string) =>
  [...fast, ...slow, ...rejected, ...signatures].find((c) => c.name === name)!;
const rawEcb = ms(find("raw node:crypto AES-256-ECB"));
const rawXts = ms(find("raw node:crypto AES-256-XTS"));
const pct = (x: number) => `${Math.round(x * 100)}%`;

const cpu = cpus();
console.log(
  `esp-ota crypto bench: ${N} bytes, node ${process.version}, OpenSSL ${process.versions.openssl}, ` +
    `${cpu.length} CPUs (${cpu[0]?.model.trim() ?? "?"}), medians`,
);
console.log("");
console.log(
  `${"case".padEnd(58)} ${"ms".padStart(8)} ${"MB/s".padStart(8)} ${"/ECB".padStart(6)} ${"/XTS".padStart(6)}`,
);
for (const c of [...fast, ...slow, ...rejected]) {
  const t = ms(c);
  console.log(
    `${c.name.padEnd(58)} ${t.toFixed(3).padStart(8)} ${mbps(t).toFixed(0).padStart(8)} ` +
      `${pct(rawEcb / t).padStart(6)} ${pct(rawXts / t).padStart(6)}`,
  );
}
console.log("");
for (const c of signatures) {
  console.log(
    `${`${c.name} (${raw.length} bytes signed)`.padEnd(58)} ${ms(c).toFixed(2).padStart(8)} ms`,
  );
}
console.log("");

const xtsRatio = Math.min(
  rawXts / ms(find("XTS-AES-256 encrypt (64-byte key)")),
  rawXts / ms(find("XTS-AES-256 decrypt (64-byte key)")),
);
const esp32Rate = Math.min(
  mbps(ms(find("ESP32 encrypt (AES-256, FLASH_CRYPT_CONFIG 0xF)"))),
  mbps(ms(find("ESP32 decrypt (AES-256, FLASH_CRYPT_CONFIG 0xF)"))),
);
const targets: [string, boolean, string][] = [
  ["xts >= 50% of raw", xtsRatio >= 0.5, pct(xtsRatio)],
  ["esp32 >= 20 MB/s", esp32Rate >= 20, `${esp32Rate.toFixed(1)} MB/s`],
];
for (const [what, ok, figure] of targets)
  console.log(`target ${what}: ${ok ? "PASS" : "FAIL"} (${figure})`);
if (targets.some(([, ok]) => !ok)) process.exitCode = 1;
