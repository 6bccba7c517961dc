/**
 * The byte-shuffling half of Espressif's XTS-AES flash encryption, kept apart from the AES half
 * (which node:crypto's AES-ECB does at hardware speed).
 *
 * Espressif's hardware encrypts each 128-byte flash unit as: reverse the unit's bytes, IEEE 1619
 * XTS-AES with tweak LE32(unit address) ‖ 12 zero bytes, reverse again (espsecure
 * `_flash_encryption_operation_aes_xts`). Written per 16-byte block k (k = 0..7) of a unit with
 * encrypted tweak T = AES(tweak key, tweak), that is:
 *
 *     C_k = rev16( AES(data key, rev16(P_k) ⊕ T·α^(7−k)) ⊕ T·α^(7−k) )
 *
 * where rev16 reverses 16 bytes and α is the XTS doubling in GF(2^128) (IEEE 1619 §5.2: shift the
 * little-endian 128-bit number left by one, fold the carry back as 0x87). Block k of the unit sits
 * at position 7−k of the reversed unit, hence α^(7−k). Decryption is the same with AES decryption
 * in the middle. So one XTS call is: `pre` (reverse, whiten), one big AES-ECB call, `post`
 * (whiten, reverse).
 *
 * Measured on the 2-core bench machine over a 1.3 MB image (docs/benchmarks.md has the run):
 * - one node:crypto `aes-*-xts` context per 128-byte unit: 40–57 MB/s (context setup dominates);
 * - these passes in plain JS (DataView byte swaps): 0.6–1 GB/s, 13–27% of raw AES-256-XTS;
 * - these passes as the WebAssembly SIMD kernel below (a swizzle reverses a block in one
 *   instruction; 4 units interleaved), over 128 KB windows that stay in cache: about 2.7 GB/s,
 *   55-58% of raw AES-256-XTS. Of the 0.5 ms per 1.3 MB, AES-ECB is 0.24 ms, the tweak
 *   encryption 0.05 ms (XTS needs one extra AES block per 128-byte unit), the copies in and out
 *   of the scratch memory 0.08 ms and the two passes 0.1 ms.
 * The kernel is a few dozen instructions, emitted by the small assembler below. The plain JS
 * kernel does the same on the same layout; it runs where WebAssembly SIMD is missing, and the
 * tests run every vector through both.
 *
 * Pure: no I/O; one shared scratch memory per kernel (calls are synchronous, so never reentered).
 */

/**
 * Bytes of flash data per window: 1024 units, 128 KB. Measured 32 KB to 512 KB: 128 KB and up are
 * equal within noise, smaller is slower. A 2 MB window (whole image at once) put glibc's allocator
 * into a page-fault-per-call regime for node:crypto's 1.3 MB outputs: 3.8 ms instead of 0.5 ms.
 */
export const XTS_CHUNK_BYTES = 128 * 1024;
/**
 * Units the SIMD kernel processes per loop turn, interleaved to hide the latency of each unit's
 * doubling chain (1, 2, 4 lanes: 3.5, 3.2, 2.8 µs per 64 KB and pass); unit counts are rounded up
 * to it.
 */
export const XTS_LANES = 4;
/** Scratch layout: data units; their encrypted tweaks T (16 bytes a unit); the tweak plaintexts. */
export const XTS_DATA_OFFSET = 0;
export const XTS_TWEAK_OFFSET = XTS_DATA_OFFSET + XTS_CHUNK_BYTES;
export const XTS_TWEAK_INPUT_OFFSET = XTS_TWEAK_OFFSET + XTS_CHUNK_BYTES / 8;
const SCRATCH_BYTES = XTS_TWEAK_INPUT_OFFSET + XTS_CHUNK_BYTES / 8;

export interface XtsWhitener {
  readonly kind: "wasm-simd" | "js";
  /** The scratch memory, laid out as the XTS_*_OFFSET constants say. */
  readonly mem: Uint8Array;
  /** Each block k of units 0..units-1: rev16, then ⊕ T·α^(7−k), T the unit's encrypted tweak. */
  pre(units: number): void;
  /** Each block k of units 0..units-1: ⊕ T·α^(7−k), then rev16. */
  post(units: number): void;
}

// ---------------------------------------------------------------------------------------------
// WebAssembly SIMD kernel. Encoding: WebAssembly Core Specification 2.0, §5 (binary format) and
// the fixed-width SIMD opcodes (prefix 0xFD). WebAssembly.validate() checks the encoding at load
// and the vectors check the semantics.

function uleb(n: number): number[] {
  const out: number[] = [];
  do {
    let b = n & 0x7f;
    n >>>= 7;
    if (n !== 0) b |= 0x80;
    out.push(b);
  } while (n !== 0);
  return out;
}

function sleb(n: number): number[] {
  const out: number[] = [];
  for (;;) {
    const b = n & 0x7f;
    n >>= 7;
    if ((n === 0 && (b & 0x40) === 0) || (n === -1 && (b & 0x40) !== 0)) {
      out.push(b);
      return out;
    }
    out.push(b | 0x80);
  }
}

function vec(items: readonly (readonly number[])[]): number[] {
  return [...uleb(items.length), ...items.flat()];
}

function section(id: number, body: readonly number[]): number[] {
  return [id, ...uleb(body.length), ...body];
}

function name(s: string): number[] {
  return vec([...s].map((c) => [c.charCodeAt(0)]));
}

const simd = (opcode: number, ...imm: number[]) => [0xfd, ...uleb(opcode), ...imm];
/** memarg: alignment hint 2^0 (only a hint; all accesses here are 16-byte aligned), offset. */
const memarg = (offset: number) => [0, ...uleb(offset)];
const op = {
  localGet: (i: number) => [0x20, ...uleb(i)],
  localSet: (i: number) => [0x21, ...uleb(i)],
  localTee: (i: number) => [0x22, ...uleb(i)],
  i32Const: (v: number) => [0x41, ...sleb(v)],
  i32Add: [0x6a],
  i32Sub: [0x6b],
  i32Eqz: [0x45],
  block: [0x02, 0x40],
  loop: [0x03, 0x40],
  end: [0x0b],
  br: (depth: number) => [0x0c, ...uleb(depth)],
  brIf: (depth: number) => [0x0d, ...uleb(depth)],
  v128Load: (offset: number) => simd(0x00, ...memarg(offset)),
  v128Store: (offset: number) => simd(0x0b, ...memarg(offset)),
  v128Const: (bytes: readonly number[]) => simd(0x0c, ...bytes),
  i8x16Shuffle: (lanes: readonly number[]) => simd(0x0d, ...lanes),
  i8x16Swizzle: simd(0x0e),
  v128And: simd(0x4e),
  v128Xor: simd(0x51),
  i32x4ShrS: simd(0xac),
  i64x2Add: simd(0xce),
};

const TYPE_I32 = 0x7f;
const TYPE_V128 = 0x7b;
/**
 * rev16 as an i8x16.swizzle index vector (byte i takes byte 15−i), kept in a local. The same
 * pattern as an i8x16.shuffle immediate was 15% slower per pass (2.8 against 2.4 µs per 64 KB),
 * presumably because V8 materialises a shuffle's byte mask at each use.
 */
const REVERSE = [15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0];
/**
 * Doubling T (two little-endian 64-bit lanes): T+T per lane, then fold the two carries. The sign
 * masks of 32-bit words 3 and 1 (the top bits of the high and low lane) are moved to words 0 and 2
 * and ANDed with 0x87 (reduction into the low lane) and 1 (carry into the high lane). A 32-bit
 * arithmetic shift is used because x64 has no 64-bit one before AVX-512 and V8 would emulate it:
 * measured 5.5 µs → 3.5 µs per 64 KB.
 */
const CARRY_PICK = [12, 13, 14, 15, 12, 13, 14, 15, 4, 5, 6, 7, 4, 5, 6, 7];
const CARRY_FOLD = [0x87, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0];

/**
 * `pre(data, tweaks, units)` / `post(...)`, units a multiple of XTS_LANES. Each loop turn takes
 * XTS_LANES units side by side, so the lanes' doubling chains overlap. Block 7 of a unit takes
 * α^0, block 6 α^1, ... so k walks down while each T doubles. Locals after the three i32
 * parameters: one tweak per lane, a temporary, the rev16 swizzle indices.
 *
 * Doubling the tweaks once into a table shared by pre and post was tried and was slower
 * (0.55-0.59 ms against 0.50-0.52 ms per 1.3 MB): the table doubles the memory traffic, while the
 * doubling here costs five register instructions.
 */
function whitenBody(post: boolean): number[] {
  const P_DATA = 0;
  const P_TWEAKS = 1;
  const P_UNITS = 2;
  const tweak = (lane: number) => 3 + lane;
  const tmp = 3 + XTS_LANES;
  const reverse = 4 + XTS_LANES;
  const c: number[][] = [];
  c.push(op.v128Const(REVERSE), op.localSet(reverse));
  c.push(op.block, op.loop);
  c.push(op.localGet(P_UNITS), op.i32Eqz, op.brIf(1));
  for (let lane = 0; lane < XTS_LANES; lane++) {
    c.push(op.localGet(P_TWEAKS), op.v128Load(16 * lane), op.localSet(tweak(lane)));
  }
  for (let k = 7; k >= 0; k--) {
    for (let lane = 0; lane < XTS_LANES; lane++) {
      const t = tweak(lane);
      const offset = 128 * lane + 16 * k;
      c.push(op.localGet(P_DATA)); // store address
      c.push(op.localGet(P_DATA), op.v128Load(offset));
      if (post) {
        c.push(op.localGet(t), op.v128Xor, op.localGet(reverse), op.i8x16Swizzle);
      } else {
        c.push(op.localGet(reverse), op.i8x16Swizzle, op.localGet(t), op.v128Xor);
      }
      c.push(op.v128Store(offset));
      if (k > 0) {
        c.push(op.localGet(t), op.i32Const(31), op.i32x4ShrS, op.localTee(tmp), op.localGet(tmp));
        c.push(op.i8x16Shuffle(CARRY_PICK), op.v128Const(CARRY_FOLD), op.v128And);
        c.push(op.localGet(t), op.localGet(t), op.i64x2Add, op.v128Xor, op.localSet(t));
      }
    }
  }
  c.push(op.localGet(P_DATA), op.i32Const(128 * XTS_LANES), op.i32Add, op.localSet(P_DATA));
  c.push(op.localGet(P_TWEAKS), op.i32Const(16 * XTS_LANES), op.i32Add, op.localSet(P_TWEAKS));
  c.push(op.localGet(P_UNITS), op.i32Const(XTS_LANES), op.i32Sub, op.localSet(P_UNITS));
  c.push(op.br(0), op.end, op.end, op.end);
  const body = [...vec([[XTS_LANES + 2, TYPE_V128]]), ...c.flat()];
  return [...uleb(body.length), ...body];
}

/** The module: memory (exported), `pre` and `post`, both (i32, i32, i32) -> (). */
export function xtsKernelModuleBytes(): Uint8Array {
  const pages = Math.ceil(SCRATCH_BYTES / 65536);
  return new Uint8Array([
    ...[0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00], // "\0asm", version 1
    ...section(1, vec([[0x60, ...vec([[TYPE_I32], [TYPE_I32], [TYPE_I32]]), ...vec([])]])),
    ...section(3, vec([[0], [0]])),
    ...section(5, vec([[0x00, ...uleb(pages)]])),
    ...section(
      7,
      vec([
        [...name("memory"), 0x02, 0],
        [...name("pre"), 0x00, 0],
        [...name("post"), 0x00, 1],
      ]),
    ),
    ...section(10, vec([whitenBody(false), whitenBody(true)])),
  ]);
}

/**
 * The slice of the WebAssembly JS API used here. The project compiles against ES2023 and
 * @types/node, which declare no WebAssembly globals, so this names the few members it needs.
 */
interface WasmJsApi {
  validate(bytes: Uint8Array): boolean;
  Module: new (bytes: Uint8Array) => object;
  Instance: new (module: object, imports: object) => { exports: unknown };
}

function createWasmWhitener(): XtsWhitener | undefined {
  const wasm = (globalThis as { WebAssembly?: WasmJsApi }).WebAssembly;
  if (wasm === undefined) return undefined;
  const bytes = xtsKernelModuleBytes();
  // False where the engine or CPU lacks fixed-width SIMD; the JS kernel takes over.
  if (!wasm.validate(bytes)) return undefined;
  const instance = new wasm.Instance(new wasm.Module(bytes), {});
  type Fn = (data: number, tweaks: number, units: number) => void;
  const exports = instance.exports as { memory: { buffer: ArrayBuffer }; pre: Fn; post: Fn };
  // The memory never grows, so this view stays attached.
  const mem = new Uint8Array(exports.memory.buffer);
  return {
    kind: "wasm-simd",
    mem,
    pre: (units) => exports.pre(XTS_DATA_OFFSET, XTS_TWEAK_OFFSET, units),
    post: (units) => exports.post(XTS_DATA_OFFSET, XTS_TWEAK_OFFSET, units),
  };
}

// ---------------------------------------------------------------------------------------------
// Plain JS kernel: the same transformation with DataView (explicit byte order, so it is right on
// any host). Words t0..t3 are the tweak's little-endian 32-bit words, t0 least significant.

function createJsWhitener(): XtsWhitener {
  const mem = new Uint8Array(SCRATCH_BYTES);
  const dv = new DataView(mem.buffer);
  const whiten = (units: number, post: boolean) => {
    for (let u = 0; u < units; u++) {
      const tw = XTS_TWEAK_OFFSET + 16 * u;
      let t0 = dv.getInt32(tw, true);
      let t1 = dv.getInt32(tw + 4, true);
      let t2 = dv.getInt32(tw + 8, true);
      let t3 = dv.getInt32(tw + 12, true);
      for (let k = 7; k >= 0; k--) {
        const o = XTS_DATA_OFFSET + 128 * u + 16 * k;
        if (post) {
          // rev16(B ⊕ T): XOR as little-endian words, store them big-endian in reverse order.
          const x0 = dv.getInt32(o, true) ^ t0;
          const x1 = dv.getInt32(o + 4, true) ^ t1;
          const x2 = dv.getInt32(o + 8, true) ^ t2;
          const x3 = dv.getInt32(o + 12, true) ^ t3;
          dv.setInt32(o, x3, false);
          dv.setInt32(o + 4, x2, false);
          dv.setInt32(o + 8, x1, false);
          dv.setInt32(o + 12, x0, false);
        } else {
          // rev16(B) ⊕ T: word m of rev16(B) is word 3−m of B read big-endian.
          const r0 = dv.getInt32(o + 12, false) ^ t0;
          const r1 = dv.getInt32(o + 8, false) ^ t1;
          const r2 = dv.getInt32(o + 4, false) ^ t2;
          const r3 = dv.getInt32(o, false) ^ t3;
          dv.setInt32(o, r0, true);
          dv.setInt32(o + 4, r1, true);
          dv.setInt32(o + 8, r2, true);
          dv.setInt32(o + 12, r3, true);
        }
        const carry = t3 >> 31; // all ones when the top bit is set
        t3 = (t3 << 1) | (t2 >>> 31);
        t2 = (t2 << 1) | (t1 >>> 31);
        t1 = (t1 << 1) | (t0 >>> 31);
        t0 = (t0 << 1) ^ (carry & 0x87);
      }
    }
  };
  return {
    kind: "js",
    mem,
    pre: (units) => whiten(units, false),
    post: (units) => whiten(units, true),
  };
}

let wasmWhitener: XtsWhitener | undefined | null = null;
let jsWhitener: XtsWhitener | undefined;

/**
 * The shared kernel: the SIMD one when the engine has it, unless `preferJs` (tests compare both).
 * Created on first use.
 */
export function xtsWhitener(preferJs = false): XtsWhitener {
  if (!preferJs) {
    if (wasmWhitener === null) wasmWhitener = createWasmWhitener();
    if (wasmWhitener) return wasmWhitener;
  }
  jsWhitener ??= createJsWhitener();
  return jsWhitener;
}
