/* Scalar reference kernels, SIMD kernels and run-time CPU dispatch (see bitkernels.h).
 *
 * Compiled with baseline flags: SIMD kernels carry their own target attributes and
 * run only after kbnn_cpu_supports says the CPU has the instructions.
 */
#include "bitkernels.h"

#include <string.h>

/* ---- reference ------------------------------------------------------------------------- */

static int popcount64_portable(uint64_t v) {
  v = v - ((v >> 1) & 0x5555555555555555ULL);
  v = (v & 0x3333333333333333ULL) + ((v >> 2) & 0x3333333333333333ULL);
  v = (v + (v >> 4)) & 0x0F0F0F0F0F0F0F0FULL;
  return (int)((v * 0x0101010101010101ULL) >> 56);
}

static void ref_xor_popcount(const uint64_t *x, const uint64_t *w, size_t words, size_t rows,
                             int32_t *out) {
  for (size_t j = 0; j < rows; ++j) {
    int32_t count = 0;
    for (size_t i = 0; i < words; ++i) count += popcount64_portable(x[i] ^ w[j * words + i]);
    out[j] = count;
  }
}

static void ref_and_popcount(const uint64_t *x, const uint64_t *w, size_t words, size_t rows,
                             int32_t *out) {
  for (size_t j = 0; j < rows; ++j) {
    int32_t count = 0;
    for (size_t i = 0; i < words; ++i) count += popcount64_portable(x[i] & w[j * words + i]);
    out[j] = count;
  }
}

/* Summed in double, in index order: the most accurate of the kernels, which are
 * tested against it with a float32 rounding tolerance. */
static void ref_masked_sum(const float *x, const uint64_t *w, size_t words, size_t rows,
                           float *out) {
  for (size_t j = 0; j < rows; ++j) {
    double sum = 0.0;
    for (size_t i = 0; i < words; ++i) {
      uint64_t bits = w[j * words + i];
      for (int b = 0; b < 64; ++b)
        if ((bits >> b) & 1) sum += x[i * 64 + b];
    }
    out[j] = (float)sum;
  }
}

/* ---- x86-64 ----------------------------------------------------------------------------- */
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#include <immintrin.h>

#define KBNN_X86 1

static uint64_t xgetbv0(void) {
  uint32_t eax, edx;
  __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
  return ((uint64_t)edx << 32) | eax;
}

static int x86_supports(int level) {
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return 0;
  int popcnt = (c >> 23) & 1, osxsave = (c >> 27) & 1;
  if (level == KBNN_LEVEL_POPCNT) return popcnt;
  if (!popcnt || !osxsave) return 0;
  uint64_t xcr0 = xgetbv0();
  if ((xcr0 & 0x6) != 0x6) return 0; /* the OS saves SSE and AVX state */
  if (__get_cpuid_max(0, 0) < 7) return 0;
  __cpuid_count(7, 0, a, b, c, d);
  int avx2 = (b >> 5) & 1;
  if (level == KBNN_LEVEL_AVX2) return avx2;
  if (level == KBNN_LEVEL_AVX512) {
    int f = (b >> 16) & 1, bw = (b >> 30) & 1, vpopcntdq = (c >> 14) & 1;
    return avx2 && f && bw && vpopcntdq && (xcr0 & 0xe6) == 0xe6; /* opmask + ZMM state */
  }
  return 0;
}

__attribute__((target("popcnt"))) static void popcnt_xor_popcount(
    const uint64_t *x, const uint64_t *w, size_t words, size_t rows, int32_t *out) {
  for (size_t j = 0; j < rows; ++j) {
    const uint64_t *row = w + j * words;
    uint64_t c0 = 0, c1 = 0, c2 = 0, c3 = 0;
    for (size_t i = 0; i < words; i += 4) {
      c0 += (uint64_t)__builtin_popcountll(x[i] ^ row[i]);
      c1 += (uint64_t)__builtin_popcountll(x[i + 1] ^ row[i + 1]);
      c2 += (uint64_t)__builtin_popcountll(x[i + 2] ^ row[i + 2]);
      c3 += (uint64_t)__builtin_popcountll(x[i + 3] ^ row[i + 3]);
    }
    out[j] = (int32_t)(c0 + c1 + c2 + c3);
  }
}

__attribute__((target("popcnt"))) static void popcnt_and_popcount(
    const uint64_t *x, const uint64_t *w, size_t words, size_t rows, int32_t *out) {
  for (size_t j = 0; j < rows; ++j) {
    const uint64_t *row = w + j * words;
    uint64_t c0 = 0, c1 = 0;
    for (size_t i = 0; i < words; i += 2) {
      c0 += (uint64_t)__builtin_popcountll(x[i] & row[i]);
      c1 += (uint64_t)__builtin_popcountll(x[i + 1] & row[i + 1]);
    }
    out[j] = (int32_t)(c0 + c1);
  }
}

/* Float sums with 8 independent accumulators: fast, and within float32 rounding of the
 * reference. */
static void scalar_masked_sum(const float *x, const uint64_t *w, size_t words, size_t rows,
                              float *out) {
  for (size_t j = 0; j < rows; ++j) {
    float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    for (size_t i = 0; i < words; ++i) {
      uint64_t bits = w[j * words + i];
      const float *xi = x + i * 64;
      while (bits) {
        int b = __builtin_ctzll(bits);
        acc[b & 7] += xi[b];
        bits &= bits - 1;
      }
    }
    out[j] = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
  }
}

/* AVX2 has no vector popcount: count nibbles with a shuffle table (Mula's method). */
__attribute__((target("avx2,popcnt"))) static inline __m256i avx2_popcount_bytes(__m256i v) {
  const __m256i table = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, 0, 1, 1,
                                         2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
  const __m256i low = _mm256_set1_epi8(0x0f);
  __m256i lo = _mm256_and_si256(v, low);
  __m256i hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), low);
  return _mm256_add_epi8(_mm256_shuffle_epi8(table, lo), _mm256_shuffle_epi8(table, hi));
}

__attribute__((target("avx2,popcnt"))) static inline int32_t avx2_sum_u64(__m256i acc) {
  __m128i s = _mm_add_epi64(_mm256_castsi256_si128(acc), _mm256_extracti128_si256(acc, 1));
  return (int32_t)(_mm_cvtsi128_si64(s) + _mm_extract_epi64(s, 1));
}

/* words is a multiple of 8: two 256-bit vectors per step; byte counts stay <= 16 per
 * step before the SAD widening, so they cannot overflow. */
#define KBNN_AVX2_POPCOUNT_BODY(OP)                                                        \
  for (size_t j = 0; j < rows; ++j) {                                                      \
    const uint64_t *row = w + j * words;                                                   \
    __m256i acc = _mm256_setzero_si256();                                                  \
    for (size_t i = 0; i < words; i += 8) {                                                \
      __m256i a = OP(_mm256_loadu_si256((const __m256i *)(x + i)),                         \
                     _mm256_loadu_si256((const __m256i *)(row + i)));                      \
      __m256i b = OP(_mm256_loadu_si256((const __m256i *)(x + i + 4)),                     \
                     _mm256_loadu_si256((const __m256i *)(row + i + 4)));                  \
      __m256i bytes = _mm256_add_epi8(avx2_popcount_bytes(a), avx2_popcount_bytes(b));     \
      acc = _mm256_add_epi64(acc, _mm256_sad_epu8(bytes, _mm256_setzero_si256()));         \
    }                                                                                      \
    out[j] = avx2_sum_u64(acc);                                                            \
  }

__attribute__((target("avx2,popcnt"))) static void avx2_xor_popcount(
    const uint64_t *x, const uint64_t *w, size_t words, size_t rows, int32_t *out) {
  KBNN_AVX2_POPCOUNT_BODY(_mm256_xor_si256)
}

__attribute__((target("avx2,popcnt"))) static void avx2_and_popcount(
    const uint64_t *x, const uint64_t *w, size_t words, size_t rows, int32_t *out) {
  KBNN_AVX2_POPCOUNT_BODY(_mm256_and_si256)
}

__attribute__((target("avx2,popcnt"))) static void avx2_masked_sum(
    const float *x, const uint64_t *w, size_t words, size_t rows, float *out) {
  const __m256i lanes = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
  for (size_t j = 0; j < rows; ++j) {
    const uint8_t *bytes = (const uint8_t *)(w + j * words);
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    for (size_t i = 0; i < words * 8; i += 2) {
      __m256i m0 = _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32(bytes[i]), lanes), lanes);
      __m256i m1 =
          _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32(bytes[i + 1]), lanes), lanes);
      acc0 = _mm256_add_ps(acc0, _mm256_and_ps(_mm256_loadu_ps(x + 8 * i), _mm256_castsi256_ps(m0)));
      acc1 = _mm256_add_ps(acc1,
                           _mm256_and_ps(_mm256_loadu_ps(x + 8 * i + 8), _mm256_castsi256_ps(m1)));
    }
    __m256 acc = _mm256_add_ps(acc0, acc1);
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    out[j] = _mm_cvtss_f32(s);
  }
}

#define KBNN_AVX512_TARGET __attribute__((target("avx512f,avx512bw,avx512vpopcntdq,avx2,popcnt")))

KBNN_AVX512_TARGET static void avx512_xor_popcount(const uint64_t *x, const uint64_t *w,
                                                   size_t words, size_t rows, int32_t *out) {
  size_t j = 0;
  for (; j + 2 <= rows; j += 2) { /* two rows share each load of x */
    const uint64_t *r0 = w + j * words, *r1 = r0 + words;
    __m512i a0 = _mm512_setzero_si512(), a1 = _mm512_setzero_si512();
    for (size_t i = 0; i < words; i += 8) {
      __m512i xv = _mm512_loadu_si512((const void *)(x + i));
      a0 = _mm512_add_epi64(a0, _mm512_popcnt_epi64(_mm512_xor_si512(
                                    xv, _mm512_loadu_si512((const void *)(r0 + i)))));
      a1 = _mm512_add_epi64(a1, _mm512_popcnt_epi64(_mm512_xor_si512(
                                    xv, _mm512_loadu_si512((const void *)(r1 + i)))));
    }
    out[j] = (int32_t)_mm512_reduce_add_epi64(a0);
    out[j + 1] = (int32_t)_mm512_reduce_add_epi64(a1);
  }
  for (; j < rows; ++j) {
    const uint64_t *r0 = w + j * words;
    __m512i a0 = _mm512_setzero_si512();
    for (size_t i = 0; i < words; i += 8)
      a0 = _mm512_add_epi64(a0, _mm512_popcnt_epi64(_mm512_xor_si512(
                                    _mm512_loadu_si512((const void *)(x + i)),
                                    _mm512_loadu_si512((const void *)(r0 + i)))));
    out[j] = (int32_t)_mm512_reduce_add_epi64(a0);
  }
}

KBNN_AVX512_TARGET static void avx512_and_popcount(const uint64_t *x, const uint64_t *w,
                                                   size_t words, size_t rows, int32_t *out) {
  for (size_t j = 0; j < rows; ++j) {
    const uint64_t *r0 = w + j * words;
    __m512i a0 = _mm512_setzero_si512();
    for (size_t i = 0; i < words; i += 8)
      a0 = _mm512_add_epi64(a0, _mm512_popcnt_epi64(_mm512_and_si512(
                                    _mm512_loadu_si512((const void *)(x + i)),
                                    _mm512_loadu_si512((const void *)(r0 + i)))));
    out[j] = (int32_t)_mm512_reduce_add_epi64(a0);
  }
}

/* The weight bits are the AVX-512 write masks: one masked add per 16 inputs. */
KBNN_AVX512_TARGET static void avx512_masked_sum(const float *x, const uint64_t *w,
                                                 size_t words, size_t rows, float *out) {
  for (size_t j = 0; j < rows; ++j) {
    const uint64_t *row = w + j * words;
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps(), a2 = _mm512_setzero_ps(),
           a3 = _mm512_setzero_ps();
    for (size_t i = 0; i < words; ++i) {
      uint64_t bits = row[i];
      if (!bits) continue;
      const float *xi = x + 64 * i;
      a0 = _mm512_mask_add_ps(a0, (__mmask16)bits, a0, _mm512_loadu_ps(xi));
      a1 = _mm512_mask_add_ps(a1, (__mmask16)(bits >> 16), a1, _mm512_loadu_ps(xi + 16));
      a2 = _mm512_mask_add_ps(a2, (__mmask16)(bits >> 32), a2, _mm512_loadu_ps(xi + 32));
      a3 = _mm512_mask_add_ps(a3, (__mmask16)(bits >> 48), a3, _mm512_loadu_ps(xi + 48));
    }
    out[j] = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
  }
}
#endif /* x86-64 */

/* ---- aarch64 ---------------------------------------------------------------------------- */
#if defined(__aarch64__)
#include <arm_neon.h>

#define KBNN_NEON_POPCOUNT_BODY(OP)                                                        \
  for (size_t j = 0; j < rows; ++j) {                                                      \
    const uint64_t *row = w + j * words;                                                   \
    uint64x2_t acc = vdupq_n_u64(0);                                                       \
    for (size_t i = 0; i < words; i += 8) {                                                \
      uint8x16_t c = vcntq_u8(vreinterpretq_u8_u64(OP(vld1q_u64(x + i), vld1q_u64(row + i)))); \
      c = vaddq_u8(c, vcntq_u8(vreinterpretq_u8_u64(OP(vld1q_u64(x + i + 2), vld1q_u64(row + i + 2))))); \
      c = vaddq_u8(c, vcntq_u8(vreinterpretq_u8_u64(OP(vld1q_u64(x + i + 4), vld1q_u64(row + i + 4))))); \
      c = vaddq_u8(c, vcntq_u8(vreinterpretq_u8_u64(OP(vld1q_u64(x + i + 6), vld1q_u64(row + i + 6))))); \
      acc = vpadalq_u32(acc, vpaddlq_u16(vpaddlq_u8(c)));                                   \
    }                                                                                      \
    out[j] = (int32_t)(vgetq_lane_u64(acc, 0) + vgetq_lane_u64(acc, 1));                   \
  }

static void neon_xor_popcount(const uint64_t *x, const uint64_t *w, size_t words, size_t rows,
                              int32_t *out) {
  KBNN_NEON_POPCOUNT_BODY(veorq_u64)
}

static void neon_and_popcount(const uint64_t *x, const uint64_t *w, size_t words, size_t rows,
                              int32_t *out) {
  KBNN_NEON_POPCOUNT_BODY(vandq_u64)
}

static void neon_masked_sum(const float *x, const uint64_t *w, size_t words, size_t rows,
                            float *out) {
  const uint32_t lane_bits[4] = {1, 2, 4, 8};
  const uint32x4_t lanes = vld1q_u32(lane_bits);
  for (size_t j = 0; j < rows; ++j) {
    const uint8_t *bytes = (const uint8_t *)(w + j * words);
    float32x4_t a0 = vdupq_n_f32(0), a1 = vdupq_n_f32(0);
    for (size_t i = 0; i < words * 8; ++i) {
      uint32x4_t lo = vtstq_u32(vdupq_n_u32(bytes[i] & 15u), lanes);
      uint32x4_t hi = vtstq_u32(vdupq_n_u32(bytes[i] >> 4), lanes);
      a0 = vaddq_f32(a0, vreinterpretq_f32_u32(vandq_u32(vreinterpretq_u32_f32(vld1q_f32(x + 8 * i)), lo)));
      a1 = vaddq_f32(a1, vreinterpretq_f32_u32(vandq_u32(vreinterpretq_u32_f32(vld1q_f32(x + 8 * i + 4)), hi)));
    }
    out[j] = vaddvq_f32(vaddq_f32(a0, a1));
  }
}
#endif /* aarch64 */

int kbnn_cpu_supports(int level) {
  if (level == KBNN_LEVEL_REFERENCE) return 1;
#if defined(KBNN_X86)
  if (level >= KBNN_LEVEL_POPCNT && level <= KBNN_LEVEL_AVX512) return x86_supports(level);
#endif
#if defined(__aarch64__)
  if (level == KBNN_LEVEL_NEON) return 1; /* Advanced SIMD is part of ARMv8-A */
#endif
  return 0;
}

kbnn_kernels kbnn_select_kernels(int max_level) {
  kbnn_kernels k = {"reference", ref_xor_popcount, ref_and_popcount, ref_masked_sum};
#if defined(KBNN_X86)
  if (max_level >= KBNN_LEVEL_AVX512 && kbnn_cpu_supports(KBNN_LEVEL_AVX512)) {
    kbnn_kernels best = {"avx512-vpopcntdq", avx512_xor_popcount, avx512_and_popcount,
                         avx512_masked_sum};
    return best;
  }
  if (max_level >= KBNN_LEVEL_AVX2 && kbnn_cpu_supports(KBNN_LEVEL_AVX2)) {
    kbnn_kernels avx2 = {"avx2", avx2_xor_popcount, avx2_and_popcount, avx2_masked_sum};
    return avx2;
  }
  if (max_level >= KBNN_LEVEL_POPCNT && kbnn_cpu_supports(KBNN_LEVEL_POPCNT)) {
    kbnn_kernels popcnt = {"popcnt", popcnt_xor_popcount, popcnt_and_popcount,
                           scalar_masked_sum};
    return popcnt;
  }
#endif
#if defined(__aarch64__)
  if (max_level >= KBNN_LEVEL_NEON) {
    kbnn_kernels neon = {"neon", neon_xor_popcount, neon_and_popcount, neon_masked_sum};
    return neon;
  }
#endif
  (void)max_level;
  return k;
}

const char *kbnn_kernels_name(int max_level) { return kbnn_select_kernels(max_level).name; }

int kbnn_run_kernel(int max_level, int which, const void *x, const uint64_t *w, size_t words,
                    size_t rows, void *out) {
  if (words % KBNN_ROW_WORDS != 0 || !x || !w || !out) return -1;
  kbnn_kernels k = kbnn_select_kernels(max_level);
  if (which == 0) k.xor_popcount((const uint64_t *)x, w, words, rows, (int32_t *)out);
  else if (which == 1) k.and_popcount((const uint64_t *)x, w, words, rows, (int32_t *)out);
  else if (which == 2) k.masked_sum((const float *)x, w, words, rows, (float *)out);
  else return -1;
  return 0;
}
