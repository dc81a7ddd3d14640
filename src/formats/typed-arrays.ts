// Growing typed arrays: the tables that hold numbers per member or per content instead of objects.

/** A copy of `old` `length` long (at least as long as old), the new tail set to `fill`. */
export function grown<T extends Uint8Array | Int32Array | Float64Array>(old: T, length: number, fill = 0): T {
  const next = new (old.constructor as new (length: number) => T)(length);
  next.set(old);
  if (fill !== 0) next.fill(fill, old.length);
  return next;
}
