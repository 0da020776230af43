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
        /* a 0 weight adds 0 * x: nothing for finite x, NaN for inf and NaN, as stock */
        if ((masks[b * k + i] >> r) & 1) acc = acc + x[i];
        else acc = acc + (zero_low ? x[i] * 0.0f : -x[i]);
      }
      out[b * 16 + r] = acc;
    }
}

/* Round to nearest even for |v| < 2^22 without libm (the default rounding mode, as the
 * SIMD conversions use). */
static float round_even(float v) { return (v + 12582912.0f) - 12582912.0f; }

static float pow2f(int e) { /* 2^e for e in [-126, 127] */
  uint32_t b = (uint32_t)(127 + e) << 23;
  float f;
  memcpy(&f, &b, sizeof f);
  return f;
}

/* e for the row whose largest |x| has bits `maxbits` (0 if it is declined, see bitkernels.h). */
static int quant_exponent(uint32_t maxbits, int negative, int *e) {
  if (maxbits >= 0x7f800000u) return 0; /* inf or NaN */
  int exponent = (int)(maxbits >> 23) - 127; /* floor(log2 max|x|); -127 for 0 and subnormals */
  if (exponent < KBNN_QUANT_MIN_EXP || exponent > KBNN_QUANT_MAX_EXP) return 0;
  *e = exponent + 1 - (negative ? 15 : 16); /* max|x| / 2^e < 2^15 or 2^16 */
  return 1;
}

static int ref_quantize_u16(const float *x, size_t k, uint32_t *lo, uint32_t *hi,
                            kbnn_quantized *q) {
  uint32_t maxbits = 0;
  int negative = 0, e;
  for (size_t i = 0; i < k; ++i) {
    uint32_t b;
    memcpy(&b, x + i, sizeof b);
    if ((b & 0x7fffffffu) > maxbits) maxbits = b & 0x7fffffffu;
    negative |= x[i] < 0.0f;
  }
  if (k >= (1u << 24) || !quant_exponent(maxbits, negative, &e)) return 0;
  float scale = pow2f(-e), delta = pow2f(e);
  int32_t qmin = negative ? -32767 : 0, qmax = negative ? 32767 : 65535;
  int32_t offset = negative ? 32768 : 0;
  memset(lo, 0, (k + 3) / 4 * sizeof(uint32_t));
  memset(hi, 0, (k + 3) / 4 * sizeof(uint32_t));
  double sum_abs = 0, weighted = 0, residual = 0;
  int64_t sum_q = 0;
  for (size_t i = 0; i < k; ++i) {
    float r = round_even(x[i] * scale);
    int32_t qi = r < (float)qmin ? qmin : r > (float)qmax ? qmax : (int32_t)r;
    uint32_t u = (uint32_t)(qi + offset);
    lo[i / 4] |= (u & 0xffu) << (8 * (i % 4));
    hi[i / 4] |= (u >> 8) << (8 * (i % 4));
    double a = x[i] < 0.0f ? -(double)x[i] : (double)x[i];
    double d = (double)x[i] - (double)qi * (double)delta;
    sum_abs += a;
    weighted += (double)(k - i) * a;
    residual += d < 0 ? -d : d;
    sum_q += qi;
  }
  if (sum_abs > KBNN_QUANT_MAX_SUM) return 0;
  q->e = e;
  q->offset = offset;
  q->sum_q = sum_q;
  q->sum_abs = sum_abs;
  q->weighted_abs = weighted;
  q->residual = residual;
  return 1;
}

static void ref_masked_sum_u16(const uint32_t *lo, const uint32_t *hi, const uint64_t *wmask,
                               size_t groups, size_t blocks, int32_t *out) {
  for (size_t b = 0; b < blocks; ++b)
    for (int j = 0; j < 16; ++j) {
      int32_t acc = 0;
      for (size_t c = 0; c < groups; ++c) {
        unsigned bits = (unsigned)(wmask[b * groups + c] >> (4 * j)) & 15u;
        for (int t = 0; t < 4; ++t)
          if ((bits >> t) & 1u)
            acc += (int32_t)(((lo[c] >> (8 * t)) & 0xffu) | (((hi[c] >> (8 * t)) & 0xffu) << 8));
      }
      out[b * 16 + j] = acc;
    }
}

static size_t ref_decide_signs(const int32_t *p, const int32_t *ones, const float *dir,
                               const float *at, size_t rows, const kbnn_sign_rule *rule,
                               float *y, int32_t *undecided) {
  size_t n = 0;
  for (size_t r = 0; r < rows; ++r) {
    double s = ((double)p[r] - (double)rule->offset * (double)ones[r]) * (double)rule->mul -
               (double)rule->sum_q;
    double t = s * rule->scale * (double)dir[r];
    if (t - rule->err >= (double)at[r]) y[r] = 1.0f;
    else if (t + rule->err < (double)at[r]) y[r] = -1.0f;
    else undecided[n++] = (int32_t)r;
  }
  return n;
}

static void ref_pack_signs(const float *y, size_t k, uint64_t *bits, size_t words) {
  memset(bits, 0, words * sizeof(uint64_t));
  for (size_t i = 0; i < k; ++i) bits[i >> 6] |= (uint64_t)(y[i] >= 0.0f) << (i & 63);
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
    int f = (b >> 16) & 1, bw = (b >> 30) & 1, vl = (b >> 31) & 1, vpopcntdq = (c >> 14) & 1,
        vnni = (c >> 11) & 1;
    return avx2 && f && bw && vl && vpopcntdq && vnni &&
           (xcr0 & 0xe6) == 0xe6; /* opmask + ZMM state */
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
      __m256 xn = zero_low ? _mm256_mul_ps(xp, _mm256_setzero_ps()) : _mm256_xor_ps(xp, sign);
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

#define KBNN_AVX512_TARGET \
  __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx512vpopcntdq,avx2,popcnt")))

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
      __m512 xn = zero_low ? _mm512_mul_ps(xp, _mm512_setzero_ps())
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
      __m512 xn = zero_low ? _mm512_mul_ps(xp, _mm512_setzero_ps())
                           : _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(xp), sign));
      a0 = _mm512_add_ps(a0, _mm512_mask_blend_ps((__mmask16)m0[i], xn, xp));
    }
    _mm512_storeu_ps(out + b * 16, a0);
  }
}

/* Two passes over x: its range, then u's byte planes (vpmovdb) and the bound's sums, in float
 * lanes rounded up (so they bound the exact sums) and added in double at the end. */
KBNN_AVX512_TARGET static int avx512_quantize_u16(const float *x, size_t k, uint32_t *lo,
                                                  uint32_t *hi, kbnn_quantized *q) {
  const __m512i magnitude = _mm512_set1_epi32(0x7fffffff);
  __m512i maxbits = _mm512_setzero_si512();
  __mmask16 negative = 0;
  for (size_t i = 0; i < k; i += 16) {
    __mmask16 m = k - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (k - i)) - 1);
    __m512 v = _mm512_maskz_loadu_ps(m, x + i);
    maxbits = _mm512_max_epu32(maxbits, _mm512_and_si512(_mm512_castps_si512(v), magnitude));
    negative |= _mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_LT_OQ);
  }
  int e;
  if (k >= (1u << 24) ||
      !quant_exponent((uint32_t)_mm512_reduce_max_epu32(maxbits), negative != 0, &e))
    return 0;
  const __m512 scale = _mm512_set1_ps(pow2f(-e)), delta = _mm512_set1_ps(pow2f(e));
  const __m512i qmin = _mm512_set1_epi32(negative ? -32767 : 0);
  const __m512i qmax = _mm512_set1_epi32(negative ? 32767 : 65535);
  const __m512i offset = _mm512_set1_epi32(negative ? 32768 : 0);
  const __m512 step = _mm512_set1_ps(16.0f);
  __m512 weight = _mm512_sub_ps(_mm512_set1_ps((float)k),
                                _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15));
  __m512 sum_abs = _mm512_setzero_ps(), weighted = sum_abs, residual = sum_abs;
  __m512i sum_q = _mm512_setzero_si512();
  size_t groups = (k + 3) / 4;
  lo[groups - 1] = hi[groups - 1] = 0; /* padding inputs are 0 */
  for (size_t i = 0; i < k; i += 16) {
    __mmask16 m = k - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (k - i)) - 1);
    __m512 v = _mm512_maskz_loadu_ps(m, x + i);
    __m512i qi = _mm512_cvtps_epi32(_mm512_mul_ps(v, scale)); /* nearest even, exact scaling */
    qi = _mm512_maskz_min_epi32(m, _mm512_max_epi32(qi, qmin), qmax);
    __m512i u = _mm512_add_epi32(qi, offset);
    _mm_mask_storeu_epi8((uint8_t *)lo + i, m, _mm512_cvtepi32_epi8(u));
    _mm_mask_storeu_epi8((uint8_t *)hi + i, m, _mm512_cvtepi32_epi8(_mm512_srli_epi32(u, 8)));
    __m512 a = _mm512_abs_ps(v);
    /* x - q 2^e is exact in float (see bitkernels.h) */
    __m512 d = _mm512_abs_ps(_mm512_sub_ps(v, _mm512_mul_ps(_mm512_cvtepi32_ps(qi), delta)));
    sum_abs = _mm512_add_round_ps(sum_abs, a, _MM_FROUND_TO_POS_INF | _MM_FROUND_NO_EXC);
    residual = _mm512_add_round_ps(residual, d, _MM_FROUND_TO_POS_INF | _MM_FROUND_NO_EXC);
    weighted = _mm512_add_round_ps(
        weighted, _mm512_mul_round_ps(a, weight, _MM_FROUND_TO_POS_INF | _MM_FROUND_NO_EXC),
        _MM_FROUND_TO_POS_INF | _MM_FROUND_NO_EXC);
    weight = _mm512_sub_ps(weight, step);
    sum_q = _mm512_add_epi32(sum_q, qi);
  }
  float lanes_abs[16], lanes_weighted[16], lanes_residual[16];
  int32_t lanes_q[16];
  _mm512_storeu_ps(lanes_abs, sum_abs);
  _mm512_storeu_ps(lanes_weighted, weighted);
  _mm512_storeu_ps(lanes_residual, residual);
  _mm512_storeu_si512(lanes_q, sum_q);
  double total_abs = 0, total_weighted = 0, total_residual = 0;
  int64_t total_q = 0;
  for (int j = 0; j < 16; ++j) {
    total_abs += lanes_abs[j];
    total_weighted += lanes_weighted[j];
    total_residual += lanes_residual[j];
    total_q += lanes_q[j];
  }
  if (total_abs > KBNN_QUANT_MAX_SUM) return 0;
  q->e = e;
  q->offset = negative ? 32768 : 0;
  q->sum_q = total_q;
  q->sum_abs = total_abs;
  q->weighted_abs = total_weighted;
  q->residual = total_residual;
  return 1;
}

/* Each row's 4 bits of a group become 4 bytes of -1 (vpmovm2b), dot products with the input's
 * two byte planes (vpdpbusd); four blocks share each broadcast. The sums come out negated. */
KBNN_AVX512_TARGET static void avx512_masked_sum_u16(const uint32_t *lo, const uint32_t *hi,
                                                     const uint64_t *wmask, size_t groups,
                                                     size_t blocks, int32_t *out) {
  size_t b = 0;
  for (; b + 4 <= blocks; b += 4) {
    const uint64_t *m0 = wmask + b * groups, *m1 = m0 + groups, *m2 = m1 + groups,
                   *m3 = m2 + groups;
    __m512i l0 = _mm512_setzero_si512(), l1 = l0, l2 = l0, l3 = l0;
    __m512i h0 = l0, h1 = l0, h2 = l0, h3 = l0;
    for (size_t c = 0; c < groups; ++c) {
      __m512i xl = _mm512_set1_epi32((int)lo[c]), xh = _mm512_set1_epi32((int)hi[c]);
      __m512i w0 = _mm512_movm_epi8(m0[c]), w1 = _mm512_movm_epi8(m1[c]);
      __m512i w2 = _mm512_movm_epi8(m2[c]), w3 = _mm512_movm_epi8(m3[c]);
      l0 = _mm512_dpbusd_epi32(l0, xl, w0);
      h0 = _mm512_dpbusd_epi32(h0, xh, w0);
      l1 = _mm512_dpbusd_epi32(l1, xl, w1);
      h1 = _mm512_dpbusd_epi32(h1, xh, w1);
      l2 = _mm512_dpbusd_epi32(l2, xl, w2);
      h2 = _mm512_dpbusd_epi32(h2, xh, w2);
      l3 = _mm512_dpbusd_epi32(l3, xl, w3);
      h3 = _mm512_dpbusd_epi32(h3, xh, w3);
    }
    const __m512i zero = _mm512_setzero_si512();
    _mm512_storeu_si512(out + b * 16, _mm512_sub_epi32(zero, _mm512_add_epi32(l0, _mm512_slli_epi32(h0, 8))));
    _mm512_storeu_si512(out + b * 16 + 16, _mm512_sub_epi32(zero, _mm512_add_epi32(l1, _mm512_slli_epi32(h1, 8))));
    _mm512_storeu_si512(out + b * 16 + 32, _mm512_sub_epi32(zero, _mm512_add_epi32(l2, _mm512_slli_epi32(h2, 8))));
    _mm512_storeu_si512(out + b * 16 + 48, _mm512_sub_epi32(zero, _mm512_add_epi32(l3, _mm512_slli_epi32(h3, 8))));
  }
  for (; b < blocks; ++b) {
    const uint64_t *m0 = wmask + b * groups;
    __m512i l0 = _mm512_setzero_si512(), h0 = l0;
    for (size_t c = 0; c < groups; ++c) {
      __m512i w0 = _mm512_movm_epi8(m0[c]);
      l0 = _mm512_dpbusd_epi32(l0, _mm512_set1_epi32((int)lo[c]), w0);
      h0 = _mm512_dpbusd_epi32(h0, _mm512_set1_epi32((int)hi[c]), w0);
    }
    _mm512_storeu_si512(out + b * 16, _mm512_sub_epi32(_mm512_setzero_si512(),
                                                       _mm512_add_epi32(l0, _mm512_slli_epi32(h0, 8))));
  }
}

/* ref_decide_signs in 8 double lanes: the same operations in the same order. */
KBNN_AVX512_TARGET static size_t avx512_decide_signs(const int32_t *p, const int32_t *ones,
                                                     const float *dir, const float *at,
                                                     size_t rows, const kbnn_sign_rule *rule,
                                                     float *y, int32_t *undecided) {
  const __m512d offset = _mm512_set1_pd((double)rule->offset), mul = _mm512_set1_pd(rule->mul);
  const __m512d sum_q = _mm512_set1_pd((double)rule->sum_q), scale = _mm512_set1_pd(rule->scale);
  const __m512d err = _mm512_set1_pd(rule->err);
  const __m256 plus = _mm256_set1_ps(1.0f), minus = _mm256_set1_ps(-1.0f);
  size_t n = 0;
  for (size_t r = 0; r < rows; r += 8) {
    __mmask8 m = rows - r >= 8 ? (__mmask8)0xff : (__mmask8)((1u << (rows - r)) - 1);
    __m512d pv = _mm512_cvtepi32_pd(_mm256_maskz_loadu_epi32(m, p + r));
    __m512d ov = _mm512_cvtepi32_pd(_mm256_maskz_loadu_epi32(m, ones + r));
    __m512d s = _mm512_sub_pd(_mm512_mul_pd(_mm512_sub_pd(pv, _mm512_mul_pd(offset, ov)), mul),
                              sum_q);
    __m512d t = _mm512_mul_pd(_mm512_mul_pd(s, scale),
                              _mm512_cvtps_pd(_mm256_maskz_loadu_ps(m, dir + r)));
    __m512d a = _mm512_cvtps_pd(_mm256_maskz_loadu_ps(m, at + r));
    __mmask8 up = _mm512_cmp_pd_mask(_mm512_sub_pd(t, err), a, _CMP_GE_OQ);
    __mmask8 down = _mm512_cmp_pd_mask(_mm512_add_pd(t, err), a, _CMP_LT_OQ);
    _mm256_mask_storeu_ps(y + r, m, _mm256_mask_blend_ps(up, minus, plus));
    unsigned open = (unsigned)(m & (__mmask8) ~(up | down));
    while (open) {
      undecided[n++] = (int32_t)(r + (size_t)__builtin_ctz(open));
      open &= open - 1;
    }
  }
  return n;
}

KBNN_AVX512_TARGET static void avx512_pack_signs(const float *y, size_t k, uint64_t *bits,
                                                 size_t words) {
  memset(bits, 0, words * sizeof(uint64_t));
  uint16_t *out = (uint16_t *)bits;
  for (size_t i = 0; i < k; i += 16) {
    __mmask16 m = k - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (k - i)) - 1);
    out[i / 16] = (uint16_t)_mm512_mask_cmp_ps_mask(m, _mm512_maskz_loadu_ps(m, y + i),
                                                    _mm512_setzero_ps(), _CMP_GE_OQ);
  }
}

__attribute__((target("avx2,popcnt"))) static void avx2_pack_signs(const float *y, size_t k,
                                                                  uint64_t *bits, size_t words) {
  memset(bits, 0, words * sizeof(uint64_t));
  uint8_t *out = (uint8_t *)bits;
  size_t i = 0;
  for (; i + 8 <= k; i += 8)
    out[i / 8] = (uint8_t)_mm256_movemask_ps(
        _mm256_cmp_ps(_mm256_loadu_ps(y + i), _mm256_setzero_ps(), _CMP_GE_OQ));
  for (; i < k; ++i) bits[i >> 6] |= (uint64_t)(y[i] >= 0.0f) << (i & 63);
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
      float32x4_t xn = zero_low ? vmulq_n_f32(xp, 0.0f) : vnegq_f32(xp);
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
  /* The sign kernels run where they beat ordered_sum: the reference (to test them) and
   * AVX-512 VNNI; elsewhere they are NULL and real-valued layers use ordered_sum. */
  kbnn_kernels k = {"reference",         ref_xor_popcount, ref_and_popcount,
                    ref_ordered_sum,     ref_quantize_u16, ref_masked_sum_u16,
                    ref_decide_signs,    ref_pack_signs};
#if defined(KBNN_X86)
  if (max_level >= KBNN_LEVEL_AVX512 && kbnn_cpu_supports(KBNN_LEVEL_AVX512)) {
    kbnn_kernels best = {"avx512-vpopcntdq",  avx512_xor_popcount,   avx512_and_popcount,
                         avx512_ordered_sum,  avx512_quantize_u16,   avx512_masked_sum_u16,
                         avx512_decide_signs, avx512_pack_signs};
    return best;
  }
  if (max_level >= KBNN_LEVEL_AVX2 && kbnn_cpu_supports(KBNN_LEVEL_AVX2)) {
    kbnn_kernels avx2 = {"avx2", avx2_xor_popcount, avx2_and_popcount, avx2_ordered_sum,
                         NULL,   NULL,              NULL,              avx2_pack_signs};
    return avx2;
  }
  if (max_level >= KBNN_LEVEL_POPCNT && kbnn_cpu_supports(KBNN_LEVEL_POPCNT)) {
    kbnn_kernels popcnt = {"popcnt", popcnt_xor_popcount, popcnt_and_popcount, ref_ordered_sum,
                           NULL,     NULL,                NULL,                ref_pack_signs};
    return popcnt;
  }
#endif
#if defined(__aarch64__)
  if (max_level >= KBNN_LEVEL_NEON) {
    kbnn_kernels neon = {"neon", neon_xor_popcount, neon_and_popcount, neon_ordered_sum,
                         NULL,   NULL,              NULL,              ref_pack_signs};
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
  else if (which == 4 && k.masked_sum_u16)
    k.masked_sum_u16((const uint32_t *)x, (const uint32_t *)x + words, w, words, rows,
                     (int32_t *)out);
  else if (which == 5 && k.pack_signs)
    k.pack_signs((const float *)x, words, (uint64_t *)out, rows);
  else return -1;
  return 0;
}

kbnn_sign_rule kbnn_sign_rule_for(const kbnn_quantized *q, size_t k, int zero_low) {
  double inputs = (double)k, u = 0x1p-24;
  double err = u * (1.0 + 0x1p-23 * inputs) * q->weighted_abs + q->residual;
  /* margins: the sums' 2^-40, the double rounding of t -+ err, flushed subnormals */
  err = err * (1.0 + 0x1p-30) + q->sum_abs * 0x1p-45 + inputs * 0x1p-126;
  uint64_t scale_bits = (uint64_t)(1023 + q->e) << 52; /* 2^e, e within [-115, 86] */
  kbnn_sign_rule rule;
  rule.offset = q->offset;
  rule.mul = zero_low ? 1 : 2;
  rule.sum_q = zero_low ? 0 : q->sum_q;
  memcpy(&rule.scale, &scale_bits, sizeof rule.scale);
  rule.err = err;
  return rule;
}

int kbnn_run_quantize(int max_level, const float *x, size_t k, uint32_t *lo, uint32_t *hi,
                      kbnn_quantized *q) {
  kbnn_kernels kernels = kbnn_select_kernels(max_level);
  if (!kernels.quantize_u16 || !x || !lo || !hi || !q || k == 0) return -1;
  return kernels.quantize_u16(x, k, lo, hi, q);
}

long kbnn_run_decide(int max_level, const int32_t *p, const int32_t *ones, const float *dir,
                     const float *at, size_t rows, const kbnn_sign_rule *rule, float *y,
                     int32_t *undecided) {
  kbnn_kernels kernels = kbnn_select_kernels(max_level);
  if (!kernels.decide_signs || !p || !ones || !dir || !at || !rule || !y || !undecided)
    return -1;
  return (long)kernels.decide_signs(p, ones, dir, at, rows, rule, y, undecided);
}
