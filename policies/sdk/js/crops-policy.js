// The JavaScript SDK for `crops:policy@0.2.0`: a placement's packed
// candidates as plain `worker` records, shaped as componentize-js passes a
// record (camelCase fields, enums by their WIT names, u64 as BigInt, an
// absent option as undefined, a tuple as an array):
//
//   import { workers } from './crops-policy.js';
//   export function place(req, candidates) {
//     for (const w of workers(candidates)) { /* w.id, w.images, ... */ }
//   }
//
// The layout it decodes is policies/sdk/README.md.

export const ENTRY = 96;
const MODES = ['byom', 'fleet'];
const PROFILES = ['open', 'standard', 'strict', 'offline'];

// Every candidate, in order, as a plain object.
export function workers(candidates) {
  const count = candidates.count;
  const table = candidates.table;
  if (count * ENTRY > table.length) {
    throw new Error(`${count} workers need ${count * ENTRY} table bytes; ${table.length} were sent`);
  }
  const view = new DataView(table.buffer, table.byteOffset, table.byteLength);
  const string = strings(candidates.text);
  const u32 = (at) => view.getUint32(at, true);
  const u64 = (at) => view.getBigUint64(at, true);
  const refs = new Map();
  // The `n` strings of the refs at `at`, each set decoded once.
  const run = (at, n) => {
    const key = `${at}:${n}`;
    let found = refs.get(key);
    if (found === undefined) {
      found = [];
      for (let i = 0; i < n; i++) found.push(string(u32(at + 8 * i), u32(at + 8 * i + 4)));
      refs.set(key, found);
    }
    return found;
  };
  const out = new Array(count);
  for (let i = 0; i < count; i++) {
    const e = i * ENTRY;
    const flags = table[e + 94];
    const pairs = run(u32(e + 40), 2 * u32(e + 44));
    const labels = [];
    for (let k = 0; k < pairs.length; k += 2) labels.push([pairs[k], pairs[k + 1]]);
    out[i] = {
      id: string(u32(e), u32(e + 4)),
      mode: MODES[Math.min(table[e + 92], 1)],
      tenantId: string(u32(e + 8), u32(e + 12)),
      platform: string(u32(e + 16), u32(e + 20)),
      arch: string(u32(e + 24), u32(e + 28)),
      region: string(u32(e + 32), u32(e + 36)),
      labels,
      cpuCount: u32(e + 80),
      memoryTotal: u64(e + 56),
      memoryFree: u64(e + 64),
      diskFree: flags & 8 ? u64(e + 72) : undefined,
      cpuLoadPermille: u32(e + 84),
      containersRunning: u32(e + 88),
      images: run(u32(e + 48), u32(e + 52)).slice(),
      // An unknown profile is the strongest (it rejects the most).
      securityFloor: PROFILES[Math.min(table[e + 93], 3)],
      drained: (flags & 1) !== 0,
      cordoned: (flags & 2) !== 0,
      online: (flags & 4) !== 0,
    };
  }
  return out;
}

// A text ref (UTF-8 bytes start..start+len of `text`) as a string.
function strings(text) {
  const bytes = new TextEncoder().encode(text);
  const cache = new Map();
  const ascii = bytes.length === text.length;
  const decoder = new TextDecoder();
  return (start, len) => {
    if (ascii) return text.slice(start, start + len);
    const key = `${start}:${len}`;
    let s = cache.get(key);
    if (s === undefined) {
      s = decoder.decode(bytes.subarray(start, start + len));
      cache.set(key, s);
    }
    return s;
  };
}
