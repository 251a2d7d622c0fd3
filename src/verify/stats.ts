/**
 * Statistical checks that observed noise is NEFTune noise: U(-s, s) per element, where s may differ
 * per element (per row in mask mode, per segment in packed mode, 0 on padding).
 *
 * The test: with z = noise / s, every |z| <= 1 (plus a rounding allowance), and the sample mean of
 * z and of z^2 lie within k standard errors of 0 and 1/3, the moments of U(-1, 1)
 * (Var z = 1/3, Var z^2 = 4/45). k is chosen from the false-alarm rate per moment test: the chance
 * that correct noise fails is at most `falseAlarm` for each of the two tests (normal approximation,
 * fine for the thousands of elements an embedding has).
 */

export interface UniformNoiseCheck {
  ok: boolean;
  /** Elements with s > 0 (the ones that must carry noise). */
  count: number;
  /** Elements with s = 0 (padding), which must be exactly zero. */
  zeroCount: number;
  maxAbsZ: number;
  meanZ: number;
  meanZ2: number;
  /** How many standard errors the moments are from their expected values. */
  meanZScore: number;
  secondMomentZScore: number;
  /** The threshold in standard errors implied by the false-alarm rate. */
  threshold: number;
  /** Counts of noise/s in HISTOGRAM_BINS equal bins over [-1, 1] (values beyond go to the end bins): the sampled shape, for plots. */
  histogram: number[];
  failures: string[];
}

export interface UniformNoiseOptions {
  /** Per-element (or one) absolute allowance for rounding in narrow float types. Default 0. */
  tolerance?: ArrayLike<number> | number;
  /** Probability that correct noise fails one moment test. Default 1e-6. */
  falseAlarm?: number;
}

export const HISTOGRAM_BINS = 40;

export function checkUniformNoise(noise: ArrayLike<number>, scale: ArrayLike<number> | number, options: UniformNoiseOptions = {}): UniformNoiseCheck {
  const falseAlarm = options.falseAlarm ?? 1e-6;
  const threshold = normalQuantile(1 - falseAlarm / 2);
  const at = (x: ArrayLike<number> | number, i: number) => (typeof x === 'number' ? x : x[i]!);
  const tol = options.tolerance ?? 0;
  let count = 0, zeroCount = 0, sum = 0, sum2 = 0, maxAbsZ = 0;
  let outOfRange = 0, nonzeroPadding = 0, nonFinite = 0;
  let worst = '';
  const histogram = new Array<number>(HISTOGRAM_BINS).fill(0);
  for (let i = 0; i < noise.length; i++) {
    const d = noise[i]!;
    const s = at(scale, i);
    if (!Number.isFinite(d)) { nonFinite++; continue; }
    if (s === 0) {
      zeroCount++;
      if (d !== 0) nonzeroPadding++;
      continue;
    }
    const z = d / s;
    const az = Math.abs(z);
    if (Math.abs(d) > s + at(tol, i)) {
      outOfRange++;
      if (az > maxAbsZ) worst = `element ${i}: noise ${d} outside +-${s}`;
    }
    if (az > maxAbsZ) maxAbsZ = az;
    histogram[Math.min(HISTOGRAM_BINS - 1, Math.max(0, Math.floor((z + 1) / 2 * HISTOGRAM_BINS)))]!++;
    count++;
    sum += z;
    sum2 += z * z;
  }
  const meanZ = count ? sum / count : 0;
  const meanZ2 = count ? sum2 / count : 0;
  const meanZScore = count ? meanZ / Math.sqrt(1 / 3 / count) : 0;
  const secondMomentZScore = count ? (meanZ2 - 1 / 3) / Math.sqrt(4 / 45 / count) : 0;
  const failures: string[] = [];
  if (nonFinite) failures.push(`${nonFinite} element(s) are NaN or infinite`);
  if (outOfRange) failures.push(`${outOfRange} element(s) exceed the +-scale bound (${worst})`);
  if (nonzeroPadding) failures.push(`${nonzeroPadding} padding element(s) carry noise (expected exactly 0)`);
  if (count === 0) failures.push('no element carries noise');
  if (Math.abs(meanZScore) > threshold) failures.push(`mean of noise/scale is ${meanZ.toFixed(4)}, ${meanZScore.toFixed(1)} standard errors from 0 (limit ${threshold.toFixed(2)}): not zero-mean`);
  if (Math.abs(secondMomentZScore) > threshold) failures.push(`mean of (noise/scale)^2 is ${meanZ2.toFixed(4)}, ${secondMomentZScore.toFixed(1)} standard errors from 1/3 (limit ${threshold.toFixed(2)}): wrong spread`);
  return { ok: failures.length === 0, count, zeroCount, maxAbsZ, meanZ, meanZ2, meanZScore, secondMomentZScore, threshold, histogram, failures };
}

/** Inverse standard normal CDF (Acklam's rational approximation, relative error < 1.2e-9). */
export function normalQuantile(p: number): number {
  if (!(p > 0 && p < 1)) throw new RangeError(`p must be in (0, 1), got ${p}`);
  const a = [-3.969683028665376e1, 2.209460984245205e2, -2.759285104469687e2, 1.38357751867269e2, -3.066479806614716e1, 2.506628277459239];
  const b = [-5.447609879822406e1, 1.615858368580409e2, -1.556989798598866e2, 6.680131188771972e1, -1.328068155288572e1];
  const c = [-7.784894002430293e-3, -3.223964580411365e-1, -2.400758277161838, -2.549732539343734, 4.374664141464968, 2.938163982698783];
  const d = [7.784695709041462e-3, 3.224671290700398e-1, 2.445134137142996, 3.754408661907416];
  const lo = 0.02425;
  if (p < lo) {
    const q = Math.sqrt(-2 * Math.log(p));
    return (((((c[0]! * q + c[1]!) * q + c[2]!) * q + c[3]!) * q + c[4]!) * q + c[5]!) / ((((d[0]! * q + d[1]!) * q + d[2]!) * q + d[3]!) * q + 1);
  }
  if (p > 1 - lo) return -normalQuantile(1 - p);
  const q = p - 0.5;
  const r = q * q;
  return (((((a[0]! * r + a[1]!) * r + a[2]!) * r + a[3]!) * r + a[4]!) * r + a[5]!) * q / (((((b[0]! * r + b[1]!) * r + b[2]!) * r + b[3]!) * r + b[4]!) * r + 1);
}
