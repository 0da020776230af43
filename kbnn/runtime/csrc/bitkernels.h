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
   * ? x[k] : (zero_low ? 0 : -x[k])); out[r] = acc. masks holds, per block of 16 rows
   * and per input, the 16 rows' weight bits. */
  void (*ordered_sum)(const float *x, const uint16_t *masks, size_t k, size_t blocks,
                      int zero_low, float *out);
} kbnn_kernels;

/* Kernel levels, lowest to highest; kbnn_select_kernels never exceeds what the CPU has. */
enum {
  KBNN_LEVEL_REFERENCE = 0,
  KBNN_LEVEL_POPCNT = 1,  /* x86-64 POPCNT */
  KBNN_LEVEL_AVX2 = 2,    /* x86-64 AVX2 + POPCNT */
  KBNN_LEVEL_AVX512 = 3,  /* x86-64 AVX-512 F/BW + VPOPCNTDQ */
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
 * uint16 masks, out: 16 x rows floats). Returns 0, or -1 if `which` is unknown or
 * (for 0 and 1) words is not a multiple of KBNN_ROW_WORDS. */
const char *kbnn_kernels_name(int max_level);
int kbnn_run_kernel(int max_level, int which, const void *x, const uint64_t *w, size_t words,
                    size_t rows, void *out);

#endif /* KBNN_BITKERNELS_H_ */
