/**
 * Varints and field skipping over bytes whose structure is already checked (wire.ts does the
 * checking, with paths and offsets for bad input); these helpers trust what they read.
 */

/** The varint at `pos` and the position after it. */
export function varintAt(buf: Uint8Array, pos: number): [number, number] {
  let result = 0, scale = 1;
  for (;;) {
    const b = buf[pos++]!;
    result += (b & 0x7f) * scale;
    if (b < 0x80) return [result, pos];
    scale *= 128;
  }
}

export function encodeVarint(value: number): Uint8Array {
  const out: number[] = [];
  while (value >= 0x80) { out.push((value % 128) | 0x80); value = Math.floor(value / 128); }
  out.push(value);
  return Uint8Array.from(out);
}

/** The position after a field value of wire type `wire` that starts at `pos`. */
export function skipValue(buf: Uint8Array, wire: number, pos: number): number {
  if (wire === 1) return pos + 8;
  if (wire === 5) return pos + 4;
  if (wire !== 0 && wire !== 2) throw new Error(`unexpected wire type ${wire} in checked bytes`);
  const [value, after] = varintAt(buf, pos);
  return wire === 2 ? after + value : after;
}
