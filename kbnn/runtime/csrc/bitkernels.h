/* Bit-level kernels of the kbnn delegate: a scalar reference and SIMD versions chosen at run time.
 *
 * Every kernel works on rows of packed bits stored as uint64_t words, `words`
 * per row, where `words` is a multiple of KBNN_ROW_WORDS (512 bits) so SIMD
 * loops need no tails; bits past a row's length are zero. Bit i of a row is
 * bit i % 64 of word i / 64.
 *
 *   kbnn_kernels k = kbnn_select_kernels(KBNN_LEVEL_BEST);
 *   k.xor_popcount(x, w, words, rows, out);   // out[j] = popcount(x ^ w[j])
 */
#ifndef KBNN_BITKERNELS_H_
#define KBNN_BITKERNELS_H_

#include <stddef.h>
#include <stdint.h>

#define KBNN_ROW_WORDS 8 /* row padding: 8 x 64 = 512 bits */

/* A real-valued input row as 16-bit integers: u_i = q_i + offset with q_i = x_i / 2^e rounded
 * (clamped to 16 bits), offset 0 if no x_i < 0, else 32768. Bounds on the float32 sum that a
 * stock kernel computes in input order (sum_j +-x_j, one rounding per input) follow from
 * the sums below: it differs from sum_j +-q_j 2^e by at most
 *   2^-24 (1 + 2^-23 k) weighted_abs + residual   (+ k 2^-126 for flushed subnormals),
 * with k the number of inputs. The three double sums are upper bounds to a relative 2^-40
 * (callers add that margin). */
typedef struct kbnn_quantized {
  int e;
  int32_t offset;
  int64_t sum_q;       /* sum_i q_i */
  double sum_abs;      /* sum_i |x_i| */
  double weighted_abs; /* sum_i (k - i) |x_i|, i from 0: each prefix sum of |x| once */
  double residual;     /* sum_i |x_i - q_i 2^e| */
} kbnn_quantized;

/* What decide_signs needs from one input row (see there). */
typedef struct kbnn_sign_rule {
  int32_t offset, mul;
  int64_t sum_q;
  double scale, err;
} kbnn_sign_rule;

/* The rule decide_signs applies to a row of k inputs quantized as q, for +-1 weights (mul 2,
 * the sum of q over set bits twice minus all) or 0/1 weights (zero_low: mul 1); err is the
 * bound above with margins for the sums' rounding and t -+ err's. */
kbnn_sign_rule kbnn_sign_rule_for(const kbnn_quantized *q, size_t k, int zero_low);

/* quantize_u16 declines (returns 0) rows with a non-finite x_i, or whose largest |x_i| is
 * outside [2^-100, 2^100], or sum_i |x_i| > 2^40. */
#define KBNN_QUANT_MIN_EXP (-100)
#define KBNN_QUANT_MAX_EXP 100
#define KBNN_QUANT_MAX_SUM 1099511627776.0 /* 2^40 */

typedef struct kbnn_kernels {
  const char *name;
  /* out[j] = popcount(x XOR w[j]) for rows j in [0, rows). */
  void (*xor_popcount)(const uint64_t *x, const uint64_t *w, size_t words, size_t rows,
                       int32_t *out);
  /* out[j] = popcount(x AND w[j]). */
  void (*and_popcount)(const uint64_t *x, const uint64_t *w, size_t words, size_t rows,
                       int32_t *out);
  /* Real-valued inputs, summed as the stock FULLY_CONNECTED sums them (one float32
   * rounding per input, in input order), so the results are bit-identical: for each of
   * blocks x 16 rows r, acc = 0; for k in [0, k): acc += (bit r of masks[block * k + k]
   * ? x[k] : (zero_low ? 0 * x[k] : -x[k])); out[r] = acc. masks holds, per block of 16 rows
   * and per input, the 16 rows' weight bits. */
  void (*ordered_sum)(const float *x, const uint16_t *masks, size_t k, size_t blocks,
                      int zero_low, float *out);
  /* The signs of real-valued layers whose output only meets a sign (see kbnn_quantized):
   * quantize the input, sum it over each row's set bits in integers, decide each row's sign
   * where an error bound allows. NULL where this CPU has no fast version. */
  int (*quantize_u16)(const float *x, size_t k, uint32_t *lo, uint32_t *hi, kbnn_quantized *q);
  /* out[r] = sum over inputs i of bit(r, i) * u[i] for blocks x 16 rows r, where u[4c + t] is
   * byte t of lo[c] + 256 * byte t of hi[c], and bit(16 b + j, 4 c + t) is bit 4 j + t of
   * wmask[b * groups + c]. */
  void (*masked_sum_u16)(const uint32_t *lo, const uint32_t *hi, const uint64_t *wmask,
                         size_t groups, size_t blocks, int32_t *out);
  /* For rows r: s = (mul * (p[r] - offset * ones[r]) - sum_q) * scale, t = dir[r] * s (all
   * exact in double); y[r] = +1 if t - err >= at[r], -1 if t + err < at[r], else r is
   * appended to `undecided` (y[r] then unspecified). Returns the number appended. */
  size_t (*decide_signs)(const int32_t *p, const int32_t *ones, const float *dir,
                         const float *at, size_t rows, const kbnn_sign_rule *rule, float *y,
                         int32_t *undecided);
  /* bits[i / 64] bit i % 64 = (y[i] >= 0) for i < k (NaN: 0); the rest of `words` words 0. */
  void (*pack_signs)(const float *y, size_t k, uint64_t *bits, size_t words);
} kbnn_kernels;

/* Kernel levels, lowest to highest; kbnn_select_kernels never exceeds what the CPU has. */
enum {
  KBNN_LEVEL_REFERENCE = 0,
  KBNN_LEVEL_POPCNT = 1,  /* x86-64 POPCNT */
  KBNN_LEVEL_AVX2 = 2,    /* x86-64 AVX2 + POPCNT */
  KBNN_LEVEL_AVX512 = 3,  /* x86-64 AVX-512 F/BW/VNNI + VPOPCNTDQ */
  KBNN_LEVEL_NEON = 4,    /* aarch64 Advanced SIMD */
  KBNN_LEVEL_BEST = 100,
};

/* The fastest kernels this CPU runs, at most `max_level` (the reference if none fits). */
kbnn_kernels kbnn_select_kernels(int max_level);

/* Whether this CPU can run kernels of `level`. */
int kbnn_cpu_supports(int level);

/* For tests and --info (called through ctypes): the name of the kernels
 * kbnn_select_kernels(max_level) picks, and one call of one of them: which = 0
 * xor_popcount, 1 and_popcount (x: uint64 words, w: rows x words, out: int32), 2 and 3
 * ordered_sum with levels -1/+1 and 0/1 (x: `words` floats, w: `rows` blocks of
 * uint16 masks, out: 16 x rows floats), 4 masked_sum_u16 (x: 2 x `words` uint32 planes lo
 * then hi, w: rows blocks x words uint64 masks, out: 16 x rows int32), 5 pack_signs (x:
 * `words` floats, out: row_words uint64 words with `rows` = that count). Returns 0, -1 if
 * `which` is unknown, the kernel is missing at this level, or (for 0 and 1) words is not a
 * multiple of KBNN_ROW_WORDS. kbnn_run_quantize and kbnn_run_decide call the other two. */
const char *kbnn_kernels_name(int max_level);
int kbnn_run_kernel(int max_level, int which, const void *x, const uint64_t *w, size_t words,
                    size_t rows, void *out);
int kbnn_run_quantize(int max_level, const float *x, size_t k, uint32_t *lo, uint32_t *hi,
                      kbnn_quantized *q);
long kbnn_run_decide(int max_level, const int32_t *p, const int32_t *ones, const float *dir,
                     const float *at, size_t rows, const kbnn_sign_rule *rule, float *y,
                     int32_t *undecided);

#endif /* KBNN_BITKERNELS_H_ */
