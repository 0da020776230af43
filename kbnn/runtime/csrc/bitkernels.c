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

static void ref_ordered_sum(const float *x, const uint16_t *masks, size_t k, size_t blocks,
                            int zero_low, float *out) {
  for (size_t b = 0; b < blocks; ++b)
    for (int r = 0; r < 16; ++r) {
      float acc = 0.0f;
      for (size_t i = 0; i < k; ++i) {
        if ((masks[b * k + i] >> r) & 1) acc = acc + x[i];
        else if (!zero_low) acc = acc + (-x[i]);
      }
      out[b * 16 + r] = acc;
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

/* 16 rows as two vectors of 8; each lane adds +x or -x (or 0): one rounding per input. */
__attribute__((target("avx2,popcnt"))) static void avx2_ordered_sum(
    const float *x, const uint16_t *masks, size_t k, size_t blocks, int zero_low, float *out) {
  const __m256i lanes = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
  const __m256 sign = _mm256_set1_ps(-0.0f);
  for (size_t b = 0; b < blocks; ++b) {
    const uint16_t *m = masks + b * k;
    __m256 lo = _mm256_setzero_ps(), hi = _mm256_setzero_ps();
    for (size_t i = 0; i < k; ++i) {
      __m256 xp = _mm256_broadcast_ss(x + i);
      __m256 xn = zero_low ? _mm256_setzero_ps() : _mm256_xor_ps(xp, sign);
      __m256 mlo = _mm256_castsi256_ps(
          _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32(m[i] & 0xff), lanes), lanes));
      __m256 mhi = _mm256_castsi256_ps(
          _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32(m[i] >> 8), lanes), lanes));
      lo = _mm256_add_ps(lo, _mm256_blendv_ps(xn, xp, mlo));
      hi = _mm256_add_ps(hi, _mm256_blendv_ps(xn, xp, mhi));
    }
    _mm256_storeu_ps(out + b * 16, lo);
    _mm256_storeu_ps(out + b * 16 + 8, hi);
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

/* The 16 rows' weight bits are an AVX-512 blend mask; four blocks share each broadcast. */
KBNN_AVX512_TARGET static void avx512_ordered_sum(const float *x, const uint16_t *masks,
                                                  size_t k, size_t blocks, int zero_low,
                                                  float *out) {
  const __m512i sign = _mm512_set1_epi32((int)0x80000000u);
  size_t b = 0;
  for (; b + 4 <= blocks; b += 4) {
    const uint16_t *m0 = masks + b * k, *m1 = m0 + k, *m2 = m1 + k, *m3 = m2 + k;
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (size_t i = 0; i < k; ++i) {
      __m512 xp = _mm512_set1_ps(x[i]);
      __m512 xn = zero_low ? _mm512_setzero_ps()
                           : _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(xp), sign));
      a0 = _mm512_add_ps(a0, _mm512_mask_blend_ps((__mmask16)m0[i], xn, xp));
      a1 = _mm512_add_ps(a1, _mm512_mask_blend_ps((__mmask16)m1[i], xn, xp));
      a2 = _mm512_add_ps(a2, _mm512_mask_blend_ps((__mmask16)m2[i], xn, xp));
      a3 = _mm512_add_ps(a3, _mm512_mask_blend_ps((__mmask16)m3[i], xn, xp));
    }
    _mm512_storeu_ps(out + b * 16, a0);
    _mm512_storeu_ps(out + b * 16 + 16, a1);
    _mm512_storeu_ps(out + b * 16 + 32, a2);
    _mm512_storeu_ps(out + b * 16 + 48, a3);
  }
  for (; b < blocks; ++b) {
    const uint16_t *m0 = masks + b * k;
    __m512 a0 = _mm512_setzero_ps();
    for (size_t i = 0; i < k; ++i) {
      __m512 xp = _mm512_set1_ps(x[i]);
      __m512 xn = zero_low ? _mm512_setzero_ps()
                           : _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(xp), sign));
      a0 = _mm512_add_ps(a0, _mm512_mask_blend_ps((__mmask16)m0[i], xn, xp));
    }
    _mm512_storeu_ps(out + b * 16, a0);
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

static void neon_ordered_sum(const float *x, const uint16_t *masks, size_t k, size_t blocks,
                             int zero_low, float *out) {
  const uint32_t lane_bits[4] = {1, 2, 4, 8};
  const uint32x4_t lanes = vld1q_u32(lane_bits);
  for (size_t b = 0; b < blocks; ++b) {
    const uint16_t *m = masks + b * k;
    float32x4_t a0 = vdupq_n_f32(0), a1 = a0, a2 = a0, a3 = a0;
    for (size_t i = 0; i < k; ++i) {
      float32x4_t xp = vdupq_n_f32(x[i]);
      float32x4_t xn = zero_low ? vdupq_n_f32(0) : vnegq_f32(xp);
      uint32_t bits = m[i];
      a0 = vaddq_f32(a0, vbslq_f32(vtstq_u32(vdupq_n_u32(bits & 15u), lanes), xp, xn));
      a1 = vaddq_f32(a1, vbslq_f32(vtstq_u32(vdupq_n_u32((bits >> 4) & 15u), lanes), xp, xn));
      a2 = vaddq_f32(a2, vbslq_f32(vtstq_u32(vdupq_n_u32((bits >> 8) & 15u), lanes), xp, xn));
      a3 = vaddq_f32(a3, vbslq_f32(vtstq_u32(vdupq_n_u32(bits >> 12), lanes), xp, xn));
    }
    vst1q_f32(out + b * 16, a0);
    vst1q_f32(out + b * 16 + 4, a1);
    vst1q_f32(out + b * 16 + 8, a2);
    vst1q_f32(out + b * 16 + 12, a3);
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
  kbnn_kernels k = {"reference", ref_xor_popcount, ref_and_popcount, ref_ordered_sum};
#if defined(KBNN_X86)
  if (max_level >= KBNN_LEVEL_AVX512 && kbnn_cpu_supports(KBNN_LEVEL_AVX512)) {
    kbnn_kernels best = {"avx512-vpopcntdq", avx512_xor_popcount, avx512_and_popcount,
                         avx512_ordered_sum};
    return best;
  }
  if (max_level >= KBNN_LEVEL_AVX2 && kbnn_cpu_supports(KBNN_LEVEL_AVX2)) {
    kbnn_kernels avx2 = {"avx2", avx2_xor_popcount, avx2_and_popcount, avx2_ordered_sum};
    return avx2;
  }
  if (max_level >= KBNN_LEVEL_POPCNT && kbnn_cpu_supports(KBNN_LEVEL_POPCNT)) {
    kbnn_kernels popcnt = {"popcnt", popcnt_xor_popcount, popcnt_and_popcount,
                           ref_ordered_sum};
    return popcnt;
  }
#endif
#if defined(__aarch64__)
  if (max_level >= KBNN_LEVEL_NEON) {
    kbnn_kernels neon = {"neon", neon_xor_popcount, neon_and_popcount, neon_ordered_sum};
    return neon;
  }
#endif
  (void)max_level;
  return k;
}

const char *kbnn_kernels_name(int max_level) { return kbnn_select_kernels(max_level).name; }

int kbnn_run_kernel(int max_level, int which, const void *x, const uint64_t *w, size_t words,
                    size_t rows, void *out) {
  if (!x || !w || !out) return -1;
  if (which <= 1 && words % KBNN_ROW_WORDS != 0) return -1;
  kbnn_kernels k = kbnn_select_kernels(max_level);
  if (which == 0) k.xor_popcount((const uint64_t *)x, w, words, rows, (int32_t *)out);
  else if (which == 1) k.and_popcount((const uint64_t *)x, w, words, rows, (int32_t *)out);
  else if (which == 2 || which == 3)
    k.ordered_sum((const float *)x, (const uint16_t *)w, words, rows, which == 3, (float *)out);
  else return -1;
  return 0;
}
