/* Binary CONV_2D / DEPTHWISE_CONV_2D for the kbnn delegate (see bitconv.h).
 *
 * A conv's weights are re-laid out in groups of 8 output channels, word-interleaved
 * (word i of the group's 8 rows side by side), so one output position's patch is
 * compared with 8 channels per vector step and the 8 counts come out in lanes, with no
 * horizontal sum per channel. Kernels: a scalar reference and POPCNT, AVX2, AVX-512
 * VPOPCNTDQ and NEON versions, chosen at run time with bitkernels' CPU checks (they are
 * compiled with baseline flags plus per-function targets). Output rows are split across
 * the delegate's thread pool.
 */
#include "bitconv.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Bit-ops of a layer worth splitting across threads: the released CNN's layers (8M-16M)
 * ran slower split in two than on one thread (2-core machine, interleaved runs). */
#define MIN_PARALLEL_CONV (1L << 25)
#define GROUP 8                      /* output channels per interleaved group */

/* ---- group kernels ----------------------------------------------------------------------- */

static void ref_group_popcount(const uint64_t *x, const uint64_t *w, size_t words,
                               size_t groups, int and_op, int32_t *out) {
  for (size_t g = 0; g < groups; ++g)
    for (int r = 0; r < GROUP; ++r) {
      int32_t count = 0;
      for (size_t i = 0; i < words; ++i) {
        uint64_t v = w[(g * words + i) * GROUP + r];
        count += __builtin_popcountll(and_op ? x[i] & v : x[i] ^ v); /* libgcc's, portable */
      }
      out[g * GROUP + r] = count;
    }
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define KBNN_CONV_X86 1

__attribute__((target("popcnt"))) static void popcnt_group_popcount(
    const uint64_t *x, const uint64_t *w, size_t words, size_t groups, int and_op,
    int32_t *out) {
  for (size_t g = 0; g < groups; ++g) {
    uint64_t c[GROUP] = {0};
    for (size_t i = 0; i < words; ++i) {
      const uint64_t *v = w + (g * words + i) * GROUP;
      uint64_t xi = x[i];
      for (int r = 0; r < GROUP; ++r)
        c[r] += (uint64_t)__builtin_popcountll(and_op ? xi & v[r] : xi ^ v[r]);
    }
    for (int r = 0; r < GROUP; ++r) out[g * GROUP + r] = (int32_t)c[r];
  }
}

/* Nibble-table byte counts (AVX2 has no vector popcount); bytes stay below 256 for 31
 * words before they are widened. */
__attribute__((target("avx2,popcnt"))) static void avx2_group_popcount(
    const uint64_t *x, const uint64_t *w, size_t words, size_t groups, int and_op,
    int32_t *out) {
  const __m256i table = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, 0, 1, 1,
                                         2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
  const __m256i low = _mm256_set1_epi8(0x0f), zero = _mm256_setzero_si256();
  for (size_t g = 0; g < groups; ++g) {
    __m256i acc0 = zero, acc1 = zero;
    for (size_t i0 = 0; i0 < words; i0 += 31) {
      size_t i1 = words - i0 < 31 ? words : i0 + 31;
      __m256i b0 = zero, b1 = zero;
      for (size_t i = i0; i < i1; ++i) {
        const uint64_t *v = w + (g * words + i) * GROUP;
        __m256i xv = _mm256_set1_epi64x((long long)x[i]);
        __m256i a = _mm256_loadu_si256((const __m256i *)v);
        __m256i b = _mm256_loadu_si256((const __m256i *)(v + 4));
        a = and_op ? _mm256_and_si256(xv, a) : _mm256_xor_si256(xv, a);
        b = and_op ? _mm256_and_si256(xv, b) : _mm256_xor_si256(xv, b);
        b0 = _mm256_add_epi8(b0, _mm256_add_epi8(
                                     _mm256_shuffle_epi8(table, _mm256_and_si256(a, low)),
                                     _mm256_shuffle_epi8(table, _mm256_and_si256(
                                                                    _mm256_srli_epi16(a, 4), low))));
        b1 = _mm256_add_epi8(b1, _mm256_add_epi8(
                                     _mm256_shuffle_epi8(table, _mm256_and_si256(b, low)),
                                     _mm256_shuffle_epi8(table, _mm256_and_si256(
                                                                    _mm256_srli_epi16(b, 4), low))));
      }
      acc0 = _mm256_add_epi64(acc0, _mm256_sad_epu8(b0, zero));
      acc1 = _mm256_add_epi64(acc1, _mm256_sad_epu8(b1, zero));
    }
    int64_t lanes[GROUP];
    _mm256_storeu_si256((__m256i *)lanes, acc0);
    _mm256_storeu_si256((__m256i *)(lanes + 4), acc1);
    for (int r = 0; r < GROUP; ++r) out[g * GROUP + r] = (int32_t)lanes[r];
  }
}

#define KBNN_CONV_AVX512 __attribute__((target("avx512f,avx512bw,avx512vpopcntdq,avx2,popcnt")))

/* Four (then two) groups share each broadcast of the patch word. */
KBNN_CONV_AVX512 static void avx512_group_popcount(const uint64_t *x, const uint64_t *w,
                                                   size_t words, size_t groups, int and_op,
                                                   int32_t *out) {
  size_t g = 0;
  for (; g + 4 <= groups; g += 4) {
    const uint64_t *w0 = w + g * words * GROUP, *w1 = w0 + words * GROUP,
                   *w2 = w1 + words * GROUP, *w3 = w2 + words * GROUP;
    __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0;
    for (size_t i = 0; i < words; ++i) {
      __m512i xv = _mm512_set1_epi64((long long)x[i]);
      __m512i v0 = _mm512_loadu_si512((const void *)(w0 + i * GROUP));
      __m512i v1 = _mm512_loadu_si512((const void *)(w1 + i * GROUP));
      __m512i v2 = _mm512_loadu_si512((const void *)(w2 + i * GROUP));
      __m512i v3 = _mm512_loadu_si512((const void *)(w3 + i * GROUP));
      if (and_op) {
        v0 = _mm512_and_si512(xv, v0);
        v1 = _mm512_and_si512(xv, v1);
        v2 = _mm512_and_si512(xv, v2);
        v3 = _mm512_and_si512(xv, v3);
      } else {
        v0 = _mm512_xor_si512(xv, v0);
        v1 = _mm512_xor_si512(xv, v1);
        v2 = _mm512_xor_si512(xv, v2);
        v3 = _mm512_xor_si512(xv, v3);
      }
      a0 = _mm512_add_epi64(a0, _mm512_popcnt_epi64(v0));
      a1 = _mm512_add_epi64(a1, _mm512_popcnt_epi64(v1));
      a2 = _mm512_add_epi64(a2, _mm512_popcnt_epi64(v2));
      a3 = _mm512_add_epi64(a3, _mm512_popcnt_epi64(v3));
    }
    _mm256_storeu_si256((__m256i *)(out + g * GROUP), _mm512_cvtepi64_epi32(a0));
    _mm256_storeu_si256((__m256i *)(out + (g + 1) * GROUP), _mm512_cvtepi64_epi32(a1));
    _mm256_storeu_si256((__m256i *)(out + (g + 2) * GROUP), _mm512_cvtepi64_epi32(a2));
    _mm256_storeu_si256((__m256i *)(out + (g + 3) * GROUP), _mm512_cvtepi64_epi32(a3));
  }
  for (; g + 2 <= groups; g += 2) {
    const uint64_t *w0 = w + g * words * GROUP, *w1 = w0 + words * GROUP;
    __m512i a0 = _mm512_setzero_si512(), a1 = a0;
    for (size_t i = 0; i < words; ++i) {
      __m512i xv = _mm512_set1_epi64((long long)x[i]);
      __m512i v0 = _mm512_loadu_si512((const void *)(w0 + i * GROUP));
      __m512i v1 = _mm512_loadu_si512((const void *)(w1 + i * GROUP));
      v0 = and_op ? _mm512_and_si512(xv, v0) : _mm512_xor_si512(xv, v0);
      v1 = and_op ? _mm512_and_si512(xv, v1) : _mm512_xor_si512(xv, v1);
      a0 = _mm512_add_epi64(a0, _mm512_popcnt_epi64(v0));
      a1 = _mm512_add_epi64(a1, _mm512_popcnt_epi64(v1));
    }
    _mm256_storeu_si256((__m256i *)(out + g * GROUP), _mm512_cvtepi64_epi32(a0));
    _mm256_storeu_si256((__m256i *)(out + (g + 1) * GROUP), _mm512_cvtepi64_epi32(a1));
  }
  for (; g < groups; ++g) {
    const uint64_t *w0 = w + g * words * GROUP;
    __m512i a0 = _mm512_setzero_si512();
    for (size_t i = 0; i < words; ++i) {
      __m512i xv = _mm512_set1_epi64((long long)x[i]);
      __m512i v0 = _mm512_loadu_si512((const void *)(w0 + i * GROUP));
      v0 = and_op ? _mm512_and_si512(xv, v0) : _mm512_xor_si512(xv, v0);
      a0 = _mm512_add_epi64(a0, _mm512_popcnt_epi64(v0));
    }
    _mm256_storeu_si256((__m256i *)(out + g * GROUP), _mm512_cvtepi64_epi32(a0));
  }
}
#endif /* x86-64 */

#if defined(__aarch64__)
#include <arm_neon.h>

static void neon_group_popcount(const uint64_t *x, const uint64_t *w, size_t words,
                                size_t groups, int and_op, int32_t *out) {
  for (size_t g = 0; g < groups; ++g) {
    uint64x2_t acc[4];
    for (int q = 0; q < 4; ++q) acc[q] = vdupq_n_u64(0);
    for (size_t i = 0; i < words; ++i) {
      const uint64_t *v = w + (g * words + i) * GROUP;
      uint64x2_t xv = vdupq_n_u64(x[i]);
      for (int q = 0; q < 4; ++q) {
        uint64x2_t a = vld1q_u64(v + 2 * q);
        a = and_op ? vandq_u64(xv, a) : veorq_u64(xv, a);
        acc[q] = vpadalq_u32(acc[q], vpaddlq_u16(vpaddlq_u8(vcntq_u8(vreinterpretq_u8_u64(a)))));
      }
    }
    for (int q = 0; q < 4; ++q) {
      out[g * GROUP + 2 * q] = (int32_t)vgetq_lane_u64(acc[q], 0);
      out[g * GROUP + 2 * q + 1] = (int32_t)vgetq_lane_u64(acc[q], 1);
    }
  }
}
#endif /* aarch64 */

/* ---- packing signs -------------------------------------------------------------------- */

static uint64_t sign_bit(const float *v, int sign) {
  if (sign) return *v >= 0.0f; /* NaN: -1, as GREATER_EQUAL says */
  uint32_t u;
  memcpy(&u, v, 4);
  return (u >> 31) ^ 1u;
}

static void ref_pack_signs(const float *v, int n, int sign, uint64_t *dst) {
  for (int w0 = 0; w0 < n; w0 += 64) {
    uint64_t word = 0;
    int m = n - w0 < 64 ? n - w0 : 64;
    for (int j = 0; j < m; ++j) word |= sign_bit(v + w0 + j, sign) << j;
    dst[w0 >> 6] = word;
  }
}

#if defined(KBNN_CONV_X86)
__attribute__((target("avx2"))) static void avx2_pack_signs(const float *v, int n, int sign,
                                                            uint64_t *dst) {
  const __m256 zero = _mm256_setzero_ps();
  for (int w0 = 0; w0 < n; w0 += 64) {
    uint64_t word = 0;
    int m = n - w0 < 64 ? n - w0 : 64, j = 0;
    for (; j + 8 <= m; j += 8) {
      __m256 x = _mm256_loadu_ps(v + w0 + j);
      unsigned bits = sign ? (unsigned)_mm256_movemask_ps(_mm256_cmp_ps(x, zero, _CMP_GE_OQ))
                           : ~(unsigned)_mm256_movemask_ps(x) & 0xffu;
      word |= (uint64_t)bits << j;
    }
    for (; j < m; ++j) word |= sign_bit(v + w0 + j, sign) << j;
    dst[w0 >> 6] = word;
  }
}

KBNN_CONV_AVX512 static void avx512_pack_signs(const float *v, int n, int sign, uint64_t *dst) {
  const __m512 zero = _mm512_setzero_ps();
  for (int w0 = 0; w0 < n; w0 += 64) {
    uint64_t word = 0;
    int m = n - w0 < 64 ? n - w0 : 64;
    for (int j = 0; j < m; j += 16) {
      __mmask16 live = (__mmask16)(m - j >= 16 ? 0xffffu : (1u << (m - j)) - 1u);
      __m512 x = _mm512_maskz_loadu_ps(live, v + w0 + j);
      __mmask16 bits = sign ? _mm512_mask_cmp_ps_mask(live, x, zero, _CMP_GE_OQ)
                            : _mm512_mask_cmpge_epi32_mask(live, _mm512_castps_si512(x),
                                                           _mm512_setzero_si512());
      word |= (uint64_t)bits << j;
    }
    dst[w0 >> 6] = word;
  }
}
#endif

static kbnn_pack_signs select_pack_signs(int max_level) {
#if defined(KBNN_CONV_X86)
  if (max_level >= KBNN_LEVEL_AVX512 && kbnn_cpu_supports(KBNN_LEVEL_AVX512))
    return avx512_pack_signs;
  if (max_level >= KBNN_LEVEL_AVX2 && kbnn_cpu_supports(KBNN_LEVEL_AVX2)) return avx2_pack_signs;
#endif
  (void)max_level;
  return ref_pack_signs;
}

/* The fastest group kernel this CPU runs, at most `max_level` (bitkernels.h levels). */
static kbnn_group_popcount select_group_popcount(int max_level) {
#if defined(KBNN_CONV_X86)
  if (max_level >= KBNN_LEVEL_AVX512 && kbnn_cpu_supports(KBNN_LEVEL_AVX512))
    return avx512_group_popcount;
  if (max_level >= KBNN_LEVEL_AVX2 && kbnn_cpu_supports(KBNN_LEVEL_AVX2))
    return avx2_group_popcount;
  if (max_level >= KBNN_LEVEL_POPCNT && kbnn_cpu_supports(KBNN_LEVEL_POPCNT))
    return popcnt_group_popcount;
#endif
#if defined(__aarch64__)
  if (max_level >= KBNN_LEVEL_NEON) return neon_group_popcount;
#endif
  (void)max_level;
  return ref_group_popcount;
}

/* ---- the node ------------------------------------------------------------------------- */

static int tensor_dim(const TfLiteTensor *t, int i) {
  return t && t->dims && i >= 0 && i < t->dims->size ? t->dims->data[i] : -1;
}

static int within(int v, int lo, int hi) { return v >= lo && v <= hi; }

int kbnn_conv_read(const TfLiteNode *node, int builtin, const TfLiteTensor *filter,
                   int in_channels, kbnn_conv *c) {
  memset(c, 0, sizeof *c);
  if (!node || !node->builtin_data || !filter || !filter->dims || filter->dims->size != 4)
    return 0;
  TfLitePadding padding;
  if (builtin == kTfLiteBuiltinConv2d) {
    const TfLiteConvParams *p = (const TfLiteConvParams *)node->builtin_data;
    c->activation = (int)p->activation;
    padding = p->padding;
    c->stride_h = p->stride_height;
    c->stride_w = p->stride_width;
    c->dil_h = p->dilation_height_factor;
    c->dil_w = p->dilation_width_factor;
    c->out_c = tensor_dim(filter, 0);
    c->in_c = tensor_dim(filter, 3);
    c->multiplier = 1;
    if (c->in_c != in_channels) return 0; /* grouped convolutions: not in layout 1 */
  } else if (builtin == kTfLiteBuiltinDepthwiseConv2d) {
    const TfLiteDepthwiseConvParams *p = (const TfLiteDepthwiseConvParams *)node->builtin_data;
    c->activation = (int)p->activation;
    padding = p->padding;
    c->depthwise = 1;
    c->stride_h = p->stride_height;
    c->stride_w = p->stride_width;
    c->dil_h = p->dilation_height_factor;
    c->dil_w = p->dilation_width_factor;
    c->in_c = in_channels;
    c->out_c = tensor_dim(filter, 3);
    if (tensor_dim(filter, 0) != 1 || in_channels <= 0 || c->out_c % in_channels) return 0;
    c->multiplier = c->out_c / in_channels;
  } else {
    return 0;
  }
  c->kh = tensor_dim(filter, 1);
  c->kw = tensor_dim(filter, 2);
  c->same = padding == kTfLitePaddingSame;
  if (padding != kTfLitePaddingSame && padding != kTfLitePaddingValid) return 0;
  if (!within(c->activation, 0, 3)) return 0; /* TANH, SIGN_BIT, ...: not computed here */
  if (!within(c->kh, 1, KBNN_CONV_MAX_KERNEL) || !within(c->kw, 1, KBNN_CONV_MAX_KERNEL) ||
      !within(c->stride_h, 1, KBNN_CONV_MAX_KERNEL) ||
      !within(c->stride_w, 1, KBNN_CONV_MAX_KERNEL) ||
      !within(c->dil_h, 1, KBNN_CONV_MAX_KERNEL) || !within(c->dil_w, 1, KBNN_CONV_MAX_KERNEL) ||
      !within(c->in_c, 1, KBNN_CONV_MAX_K) || !within(c->out_c, 1, KBNN_CONV_MAX_K))
    return 0;
  if (c->depthwise && c->kh * c->kw > KBNN_CONV_MAX_TAPS) return 0;
  if ((long)c->kh * c->kw * c->in_c > KBNN_CONV_MAX_K) return 0;
  return 1;
}

int kbnn_conv_activation_step(const kbnn_conv *c, kbnn_conv_step *step) {
  static const float bounds[4][2] = {{0, 0}, {0.0f, HUGE_VALF}, {-1.0f, 1.0f}, {0.0f, 6.0f}};
  if (c->activation < 1 || c->activation > 3) return 0;
  step->op = KBNN_STEP_CLAMP;
  step->count = 2;
  step->values = bounds[c->activation];
  return 1;
}

long kbnn_conv_row_bits(const kbnn_conv *c) {
  return c->depthwise ? (long)c->kh * c->kw : (long)c->kh * c->kw * c->in_c;
}

/* The stock kernels' output size and leading padding along one axis. */
static int axis_size(int in, int k, int stride, int dil, int same, int *out, int *pad) {
  int eff = (k - 1) * dil + 1;
  *out = same ? (in + stride - 1) / stride : (in >= eff ? (in - eff + stride) / stride : 0);
  int total = (*out - 1) * stride + eff - in;
  *pad = total > 0 ? total / 2 : 0;
  return *out > 0;
}

int kbnn_conv_output_size(const kbnn_conv *c, int in_h, int in_w, int *out_h, int *out_w) {
  int pad;
  if (!within(in_h, 1, KBNN_CONV_MAX_SIZE) || !within(in_w, 1, KBNN_CONV_MAX_SIZE)) return 0;
  return axis_size(in_h, c->kh, c->stride_h, c->dil_h, c->same, out_h, &pad) &&
         axis_size(in_w, c->kw, c->stride_w, c->dil_w, c->same, out_w, &pad);
}

/* ---- padding classes ------------------------------------------------------------------- */

/* Valid taps [lo, hi) of output index o along an axis: in = o * stride - pad + t * dil. */
static void valid_taps(int o, int in, int k, int stride, int dil, int pad, int *lo, int *hi) {
  int first = o * stride - pad;
  *lo = 0;
  while (*lo < k && first + *lo * dil < 0) ++*lo;
  *hi = k;
  while (*hi > *lo && first + (*hi - 1) * dil >= in) --*hi;
}

/* Groups the outputs of an axis by their valid tap range: class[o], ranges 2 per class. */
static int classify(int n_out, int in, int k, int stride, int dil, int pad, int *cls,
                    int *ranges) {
  int n = 0;
  for (int o = 0; o < n_out; ++o) {
    int lo, hi, found = -1;
    valid_taps(o, in, k, stride, dil, pad, &lo, &hi);
    for (int i = 0; i < n && found < 0; ++i)
      if (ranges[2 * i] == lo && ranges[2 * i + 1] == hi) found = i;
    if (found < 0) {
      found = n++;
      ranges[2 * found] = lo;
      ranges[2 * found + 1] = hi;
    }
    cls[o] = found;
  }
  return n;
}

void kbnn_conv_release(kbnn_conv *c) {
  free(c->yclass);
  free(c->xclass);
  free(c->yrange);
  free(c->xrange);
  free(c->corr);
  free(c->pixels);
  free(c->grouped);
  c->yclass = c->xclass = c->yrange = c->xrange = NULL;
  c->corr = NULL;
  c->pixels = c->grouped = NULL;
}

static int row_bit(const uint64_t *row, long i) { return (int)((row[i >> 6] >> (i & 63)) & 1); }

/* Bits [start, start + n) of a row (n <= 64, inside the row) as the low bits of a word. */
static uint64_t row_bits(const uint64_t *row, long start, int n) {
  long i = start >> 6;
  int shift = (int)(start & 63);
  uint64_t v = row[i] >> shift;
  if (shift && shift + n > 64) v |= row[i + 1] << (64 - shift);
  return n == 64 ? v : v & ((1ULL << n) - 1);
}

int kbnn_conv_prepare(kbnn_conv *c, int in_h, int in_w, const uint64_t *w, size_t words,
                      int zero_low, int max_level) {
  kbnn_conv_release(c);
  if (!kbnn_conv_output_size(c, in_h, in_w, &c->out_h, &c->out_w)) return 0;
  axis_size(in_h, c->kh, c->stride_h, c->dil_h, c->same, &c->out_h, &c->pad_top);
  axis_size(in_w, c->kw, c->stride_w, c->dil_w, c->same, &c->out_w, &c->pad_left);
  c->in_h = in_h;
  c->in_w = in_w;
  c->pixel_words = (c->in_c + 63) / 64;
  c->pack = select_pack_signs(max_level);
  if ((size_t)kbnn_conv_row_bits(c) > words * 64) return 0;
  c->yclass = (int *)malloc(sizeof(int) * (size_t)c->out_h);
  c->xclass = (int *)malloc(sizeof(int) * (size_t)c->out_w);
  c->yrange = (int *)malloc(sizeof(int) * 2 * (size_t)c->out_h);
  c->xrange = (int *)malloc(sizeof(int) * 2 * (size_t)c->out_w);
  c->pixels = (uint64_t *)calloc((size_t)in_h * in_w * c->pixel_words + 1, sizeof(uint64_t));
  if (!c->yclass || !c->xclass || !c->yrange || !c->xrange || !c->pixels) {
    kbnn_conv_release(c);
    return 0;
  }
  c->n_yclass = classify(c->out_h, in_h, c->kh, c->stride_h, c->dil_h, c->pad_top, c->yclass,
                         c->yrange);
  c->n_xclass = classify(c->out_w, in_w, c->kw, c->stride_w, c->dil_w, c->pad_left, c->xclass,
                         c->xrange);
  if (c->depthwise) return 1; /* sums only valid taps: no corrections */
  c->group_popcount = select_group_popcount(max_level);
  /* Patches of whole words per tap are copied, not shifted, into place: worth up to a
   * third more words to count (48 or 96 channels: 9 words per 7 bits' worth). */
  int packed_words = (int)((kbnn_conv_row_bits(c) + 63) / 64);
  int aligned_words = c->kh * c->kw * c->pixel_words;
  c->aligned = 3 * aligned_words <= 4 * packed_words;
  c->group_words = c->aligned ? aligned_words : packed_words;
  c->groups = (c->out_c + GROUP - 1) / GROUP;
  c->grouped = (uint64_t *)calloc((size_t)c->groups * c->group_words * GROUP + 1,
                                  sizeof(uint64_t));
  if (!c->grouped) {
    kbnn_conv_release(c);
    return 0;
  }
  for (int o = 0; o < c->out_c; ++o)
    for (int i = 0; i < c->group_words; ++i) {
      const uint64_t *row = w + (size_t)o * words;
      uint64_t word;
      if (c->aligned) { /* channels [64 j, 64 j + 64) of tap t */
        int t = i / c->pixel_words, j = i % c->pixel_words;
        int n = c->in_c - 64 * j < 64 ? c->in_c - 64 * j : 64;
        word = row_bits(row, (long)t * c->in_c + 64L * j, n);
      } else {
        word = row[i]; /* i < ceil(k / 64) <= words */
      }
      c->grouped[((size_t)(o / GROUP) * c->group_words + i) * GROUP + o % GROUP] = word;
    }
  /* For each class pair and output channel, what the popcount counts for padded taps
   * (their input bits are 0): +-1 weights: 2 * popcount(w & pad) - padded bits; 0/1
   * weights: popcount(w & pad). dot = counted + corr. */
  size_t n = (size_t)c->n_yclass * c->n_xclass * c->out_c;
  c->corr = (int32_t *)calloc(n + 1, sizeof(int32_t));
  if (!c->corr) {
    kbnn_conv_release(c);
    return 0;
  }
  for (int yc = 0; yc < c->n_yclass; ++yc)
    for (int xc = 0; xc < c->n_xclass; ++xc) {
      int y0 = c->yrange[2 * yc], y1 = c->yrange[2 * yc + 1];
      int x0 = c->xrange[2 * xc], x1 = c->xrange[2 * xc + 1];
      if (y0 == 0 && y1 == c->kh && x0 == 0 && x1 == c->kw) continue; /* no padding */
      int32_t *corr = c->corr + ((size_t)yc * c->n_xclass + xc) * c->out_c;
      for (int o = 0; o < c->out_c; ++o) {
        const uint64_t *row = w + (size_t)o * words;
        int32_t set = 0, padded = 0;
        for (int ky = 0; ky < c->kh; ++ky)
          for (int kx = 0; kx < c->kw; ++kx) {
            if (ky >= y0 && ky < y1 && kx >= x0 && kx < x1) continue;
            long first = ((long)ky * c->kw + kx) * c->in_c;
            for (int ch = 0; ch < c->in_c; ++ch) set += row_bit(row, first + ch);
            padded += c->in_c;
          }
        corr[o] = zero_low ? set : 2 * set - padded;
      }
    }
  return 1;
}

/* ---- one image ---------------------------------------------------------------------------- */

typedef struct {
  const kbnn_conv_weights *cw;
  const float *x;
  float *out;
  int failed;
} conv_job;

/* Input bits of one image, in_c bits per pixel (bit c of word c / 64), from y >= 0 or
 * from +-1 values (sign bit clear). */
static void pack_pixels(const kbnn_conv *c, const float *x, int sign) {
  long pixels = (long)c->in_h * c->in_w;
  for (long p = 0; p < pixels; ++p)
    c->pack(x + p * c->in_c, c->in_c, sign, c->pixels + p * c->pixel_words);
}

/* Four lanes of plain C (SSE2 / NEON with GCC and clang): each lane does the same IEEE
 * operation as the scalar code, so results do not change. */
typedef float kbnn_v4 __attribute__((vector_size(16)));
typedef int32_t kbnn_i4 __attribute__((vector_size(16)));

/* a where `pick` is set, else b (lanes of all ones or zeros). */
static kbnn_v4 lanes_select(kbnn_i4 pick, kbnn_v4 a, kbnn_v4 b) {
  kbnn_i4 ai, bi;
  memcpy(&ai, &a, sizeof ai);
  memcpy(&bi, &b, sizeof bi);
  ai = (ai & pick) | (bi & ~pick);
  memcpy(&a, &ai, sizeof a);
  return a;
}

/* cw's steps on one position's n = out_c values, all steps per four lanes. */
static void finish(const kbnn_conv_weights *cw, float *y, int n) {
  int r = 0;
  const kbnn_conv_step *s0 = &cw->steps[0], *s1 = &cw->steps[1];
  if (cw->n_steps == 0) return;
  if (cw->n_steps == 2 && s0->op == KBNN_STEP_MUL && s0->count == n &&
      s1->op == KBNN_STEP_ADD && s1->count == n) { /* a folded batch norm */
    for (; r + 4 <= n; r += 4) {
      kbnn_v4 v, scale, offset;
      memcpy(&v, y + r, sizeof v);
      memcpy(&scale, s0->values + r, sizeof scale);
      memcpy(&offset, s1->values + r, sizeof offset);
      v = v * scale;
      v = v + offset;
      memcpy(y + r, &v, sizeof v);
    }
  }
  for (; r + 4 <= n; r += 4) {
    kbnn_v4 v, c;
    memcpy(&v, y + r, sizeof v);
    for (int s = 0; s < cw->n_steps; ++s) {
      const kbnn_conv_step *step = &cw->steps[s];
      if (step->op == KBNN_STEP_CLAMP) {
        float lo = step->values[0], hi = step->values[1];
        c = (kbnn_v4){lo, lo, lo, lo};
        v = lanes_select(v < c, c, v); /* std::max(v, lo): v < lo ? lo : v */
        c = (kbnn_v4){hi, hi, hi, hi};
        v = lanes_select(c < v, c, v); /* std::min(v, hi): hi < v ? hi : v */
        continue;
      }
      if (step->count == 1) {
        float c0 = step->values[0];
        c = (kbnn_v4){c0, c0, c0, c0};
      } else {
        memcpy(&c, step->values + r, sizeof c);
      }
      if (step->op == KBNN_STEP_MUL) v = v * c;
      else v = v + c;
    }
    memcpy(y + r, &v, sizeof v);
  }
  for (; r < n; ++r)
    for (int s = 0; s < cw->n_steps; ++s) {
      const kbnn_conv_step *step = &cw->steps[s];
      if (step->op == KBNN_STEP_CLAMP) {
        if (y[r] < step->values[0]) y[r] = step->values[0];
        if (step->values[1] < y[r]) y[r] = step->values[1];
        continue;
      }
      float c = step->values[step->count == 1 ? 0 : r];
      y[r] = step->op == KBNN_STEP_MUL ? y[r] * c : y[r] + c;
    }
}

/* Dot products from popcounts: +-1 weights k - 2 count, 0/1 weights 2 count - ones; plus
 * the padding correction; as float. */
static void counts_to_floats(const int32_t *counts, const int32_t *corr, const int32_t *ones,
                             int32_t k, int zero_low, float *out, int n) {
  int r = 0;
  for (; r + 4 <= n; r += 4) {
    kbnn_i4 c, fix, one;
    memcpy(&c, counts + r, sizeof c);
    memcpy(&fix, corr + r, sizeof fix);
    if (zero_low) {
      memcpy(&one, ones + r, sizeof one);
      c = c + c - one + fix;
    } else {
      c = k - (c + c) + fix;
    }
    kbnn_v4 v = __builtin_convertvector(c, kbnn_v4);
    memcpy(out + r, &v, sizeof v);
  }
  for (; r < n; ++r)
    out[r] = (float)((zero_low ? 2 * counts[r] - ones[r] : k - 2 * counts[r]) + corr[r]);
}

static int all_pm1(const float *x, long n) {
  for (long i = 0; i < n; ++i) {
    uint32_t u;
    memcpy(&u, &x[i], 4);
    if ((u & 0x7fffffffu) != 0x3f800000u) return 0;
  }
  return 1;
}

/* Where output (oy, ox) reads: valid taps [y0, y1) x [x0, x1), the input row and column
 * of tap (0, 0), its class pair (the padding correction's index). */
typedef struct {
  int y0, y1, x0, x1, iy0, ix0, cls;
} conv_at;

static conv_at position(const kbnn_conv *c, int oy, int ox) {
  int yc = c->yclass[oy], xc = c->xclass[ox];
  conv_at q = {c->yrange[2 * yc], c->yrange[2 * yc + 1], c->xrange[2 * xc],
               c->xrange[2 * xc + 1], oy * c->stride_h - c->pad_top,
               ox * c->stride_w - c->pad_left, yc * c->n_xclass + xc};
  return q;
}

/* The input pixel under tap (ky, kx) of q (a valid tap). */
static long tap_pixel(const kbnn_conv *c, const conv_at *q, int ky, int kx) {
  return (long)(q->iy0 + ky * c->dil_h) * c->in_w + (q->ix0 + kx * c->dil_w);
}

/* ORs `n` words of bits into `dst` starting at bit `at` (dst has `words` words). */
static void put_bits(uint64_t *dst, size_t words, long at, const uint64_t *src, int n) {
  size_t i0 = (size_t)(at >> 6);
  int shift = (int)(at & 63);
  for (int i = 0; i < n; ++i) {
    uint64_t s = src[i];
    if (i0 + i >= words) break;
    dst[i0 + i] |= s << shift;
    if (shift && i0 + i + 1 < words) dst[i0 + i + 1] |= s >> (64 - shift);
  }
}

static void binary_rows(void *arg, int begin, int end) {
  conv_job *job = (conv_job *)arg;
  const kbnn_conv_weights *cw = job->cw;
  const kbnn_conv *c = cw->c;
  size_t words = (size_t)c->group_words;
  kbnn_group_popcount popcount = c->group_popcount;
  uint64_t *patch = (uint64_t *)malloc(sizeof(uint64_t) * words);
  int32_t *counts = (int32_t *)malloc(sizeof(int32_t) * (size_t)c->groups * GROUP);
  if (!patch || !counts) {
    job->failed = 1;
    free(patch);
    free(counts);
    return;
  }
  int k = (int)kbnn_conv_row_bits(c), pw = c->pixel_words;
  for (int oy = begin; oy < end; ++oy) {
    for (int ox = 0; ox < c->out_w; ++ox) {
      conv_at q = position(c, oy, ox);
      if (c->aligned) { /* tap t in words [t * pw, t * pw + pw); padded taps 0 */
        uint64_t *dst = patch;
        for (int ky = 0; ky < c->kh; ++ky)
          for (int kx = 0; kx < c->kw; ++kx, dst += pw) {
            if (ky < q.y0 || ky >= q.y1 || kx < q.x0 || kx >= q.x1) {
              for (int i = 0; i < pw; ++i) dst[i] = 0;
            } else {
              const uint64_t *src = c->pixels + (size_t)tap_pixel(c, &q, ky, kx) * pw;
              for (int i = 0; i < pw; ++i) dst[i] = src[i];
            }
          }
      } else {
        memset(patch, 0, sizeof(uint64_t) * words);
        for (int ky = q.y0; ky < q.y1; ++ky) {
          const uint64_t *line = c->pixels + (size_t)(q.iy0 + ky * c->dil_h) * c->in_w * pw;
          for (int kx = q.x0; kx < q.x1; ++kx)
            put_bits(patch, words, ((long)ky * c->kw + kx) * c->in_c,
                     line + (size_t)(q.ix0 + kx * c->dil_w) * pw, pw);
        }
      }
      popcount(patch, c->grouped, words, (size_t)c->groups, cw->zero_low, counts);
      const int32_t *corr = c->corr + (size_t)q.cls * c->out_c;
      float *out = job->out + ((size_t)oy * c->out_w + ox) * c->out_c;
      counts_to_floats(counts, corr, cw->ones, k, cw->zero_low, out, c->out_c);
      finish(cw, out, c->out_c);
    }
  }
  free(patch);
  free(counts);
}

/* Real-valued inputs: each position's patch (zeros where padded, as im2col fills it)
 * summed in patch order by bitkernels' ordered_sum. */
static void real_rows(void *arg, int begin, int end) {
  conv_job *job = (conv_job *)arg;
  const kbnn_conv_weights *cw = job->cw;
  const kbnn_conv *c = cw->c;
  long k = kbnn_conv_row_bits(c);
  float *patch = (float *)malloc(sizeof(float) * (size_t)k);
  float *sums = (float *)malloc(sizeof(float) * 16 * (size_t)cw->blocks);
  if (!patch || !sums) {
    job->failed = 1;
    free(patch);
    free(sums);
    return;
  }
  for (int oy = begin; oy < end; ++oy) {
    for (int ox = 0; ox < c->out_w; ++ox) {
      conv_at q = position(c, oy, ox);
      for (int ky = 0; ky < c->kh; ++ky)
        for (int kx = 0; kx < c->kw; ++kx) {
          float *dst = patch + ((long)ky * c->kw + kx) * c->in_c;
          if (ky < q.y0 || ky >= q.y1 || kx < q.x0 || kx >= q.x1) {
            memset(dst, 0, sizeof(float) * (size_t)c->in_c);
          } else {
            const float *src = job->x + tap_pixel(c, &q, ky, kx) * c->in_c;
            for (int ch = 0; ch < c->in_c; ++ch) dst[ch] = src[ch];
          }
        }
      cw->k->ordered_sum(patch, cw->masks, (size_t)k, (size_t)cw->blocks, cw->zero_low, sums);
      float *out = job->out + ((size_t)oy * c->out_w + ox) * c->out_c;
      memcpy(out, sums, sizeof(float) * (size_t)c->out_c);
      finish(cw, out, c->out_c);
    }
  }
  free(patch);
  free(sums);
}

/* Depthwise: per output channel, its valid taps only, acc = acc + x * w in tap order from
 * the bias, as the stock kernel accumulates; with +-1 inputs and a +0 bias the sum is an
 * exact integer, so popcounts of the taps' bits give it. */
static void depthwise_rows(void *arg, int begin, int end, int binary) {
  conv_job *job = (conv_job *)arg;
  const kbnn_conv_weights *cw = job->cw;
  const kbnn_conv *c = cw->c;
  int pw = c->pixel_words, m = c->multiplier;
  for (int oy = begin; oy < end; ++oy) {
    for (int ox = 0; ox < c->out_w; ++ox) {
      conv_at q = position(c, oy, ox);
      float *out = job->out + ((size_t)oy * c->out_w + ox) * c->out_c;
      uint64_t valid = 0;
      for (int ky = q.y0; ky < q.y1; ++ky)
        for (int kx = q.x0; kx < q.x1; ++kx) valid |= 1ULL << (ky * c->kw + kx);
      for (int ch = 0; ch < c->in_c; ++ch) {
        uint64_t xt = 0;
        if (binary)
          for (int ky = q.y0; ky < q.y1; ++ky)
            for (int kx = q.x0; kx < q.x1; ++kx) {
              long p = tap_pixel(c, &q, ky, kx);
              xt |= (uint64_t)row_bit(c->pixels + p * pw, ch) << (ky * c->kw + kx);
            }
        for (int j = 0; j < m; ++j) {
          int oc = ch * m + j;
          uint64_t wt = cw->w[(size_t)oc * cw->words];
          float acc = cw->start ? cw->start[oc] : 0.0f;
          uint32_t start_bits;
          memcpy(&start_bits, &acc, 4);
          if (binary && start_bits == 0) { /* +0 */
            int dot = cw->zero_low
                          ? 2 * __builtin_popcountll(xt & wt & valid) -
                                __builtin_popcountll(wt & valid)
                          : __builtin_popcountll(valid) - 2 * __builtin_popcountll((xt ^ wt) & valid);
            out[oc] = (float)dot;
            continue;
          }
          for (int ky = q.y0; ky < q.y1; ++ky)
            for (int kx = q.x0; kx < q.x1; ++kx) {
              int t = ky * c->kw + kx;
              long p = tap_pixel(c, &q, ky, kx);
              float level = (wt >> t) & 1 ? 1.0f : (cw->zero_low ? 0.0f : -1.0f);
              float v = binary ? ((xt >> t) & 1 ? 1.0f : -1.0f) : job->x[p * c->in_c + ch];
              acc = acc + v * level;
            }
          out[oc] = acc;
        }
      }
      finish(cw, out, c->out_c);
    }
  }
}

static void depthwise_binary_rows(void *arg, int begin, int end) {
  depthwise_rows(arg, begin, end, 1);
}

static void depthwise_real_rows(void *arg, int begin, int end) {
  depthwise_rows(arg, begin, end, 0);
}

int kbnn_conv_image(const kbnn_conv_weights *cw, kbnn_pool *pool, const float *x, int input,
                    float *out) {
  const kbnn_conv *c = cw->c;
  int binary = input == KBNN_CONV_SIGN || all_pm1(x, (long)c->in_h * c->in_w * c->in_c);
  if (binary) pack_pixels(c, x, input == KBNN_CONV_SIGN);
  conv_job job = {cw, x, out, 0};
  long work = (long)c->out_h * c->out_w * c->out_c * kbnn_conv_row_bits(c);
  kbnn_task task = c->depthwise ? (binary ? depthwise_binary_rows : depthwise_real_rows)
                                : (binary ? binary_rows : real_rows);
  kbnn_pool_run(work >= MIN_PARALLEL_CONV ? pool : NULL, task, &job, c->out_h, 1);
  return job.failed ? -1 : 0;
}

/* ---- tests ------------------------------------------------------------------------------- */

static size_t padded_words(long bits) {
  size_t words = (size_t)((bits + 63) / 64);
  return (words + KBNN_ROW_WORDS - 1) / KBNN_ROW_WORDS * KBNN_ROW_WORDS;
}

/* The direct loop: every tap in [ky][kx][c] order, padded taps as 0 (conv) or skipped
 * (depthwise), acc = acc + x * level. */
static void reference_conv(const kbnn_conv *c, const float *x, const uint8_t *levels,
                           int zero_low, float *out) {
  for (int oy = 0; oy < c->out_h; ++oy)
    for (int ox = 0; ox < c->out_w; ++ox)
      for (int o = 0; o < c->out_c; ++o) {
        float acc = 0.0f;
        int ch_only = c->depthwise ? o / c->multiplier : -1;
        for (int ky = 0; ky < c->kh; ++ky)
          for (int kx = 0; kx < c->kw; ++kx)
            for (int ch = 0; ch < c->in_c; ++ch) {
              if (c->depthwise && ch != ch_only) continue;
              int iy = oy * c->stride_h - c->pad_top + ky * c->dil_h;
              int ix = ox * c->stride_w - c->pad_left + kx * c->dil_w;
              int inside = iy >= 0 && iy < c->in_h && ix >= 0 && ix < c->in_w;
              if (c->depthwise && !inside) continue;
              long wi = c->depthwise ? ((long)ky * c->kw + kx) * c->out_c + o
                                     : (((long)o * c->kh + ky) * c->kw + kx) * c->in_c + ch;
              float level = levels[wi] ? 1.0f : (zero_low ? 0.0f : -1.0f);
              float v = inside ? x[((long)iy * c->in_w + ix) * c->in_c + ch] : 0.0f;
              acc = acc + v * level;
            }
        out[((long)oy * c->out_w + ox) * c->out_c + o] = acc;
      }
}

int kbnn_run_conv(int max_level, int reference, const int *shape, const float *x,
                  const uint8_t *levels, float *out) {
  if (!shape || !x || !levels || !out) return -1;
  kbnn_conv c;
  memset(&c, 0, sizeof c);
  c.depthwise = shape[0] != 0;
  c.kh = shape[1];
  c.kw = shape[2];
  c.in_c = shape[3];
  c.multiplier = c.depthwise ? shape[4] : 1;
  c.out_c = c.depthwise ? c.in_c * shape[4] : shape[4];
  c.stride_h = shape[5];
  c.stride_w = shape[6];
  c.dil_h = shape[7];
  c.dil_w = shape[8];
  c.same = shape[9] != 0;
  int in_h = shape[10], in_w = shape[11], zero_low = shape[12] != 0, input = shape[13];
  if (!within(c.kh, 1, KBNN_CONV_MAX_KERNEL) || !within(c.kw, 1, KBNN_CONV_MAX_KERNEL) ||
      !within(c.in_c, 1, 4096) || !within(c.out_c, 1, 4096) ||
      !within(c.stride_h, 1, 64) || !within(c.stride_w, 1, 64) || !within(c.dil_h, 1, 64) ||
      !within(c.dil_w, 1, 64) || (c.depthwise && c.kh * c.kw > KBNN_CONV_MAX_TAPS))
    return -1;
  long k = kbnn_conv_row_bits(&c);
  size_t words = padded_words(k);
  int blocks = (c.out_c + 15) / 16;
  uint64_t *w = (uint64_t *)calloc((size_t)c.out_c * words, sizeof(uint64_t));
  int32_t *ones = (int32_t *)calloc((size_t)c.out_c, sizeof(int32_t));
  uint16_t *masks = (uint16_t *)calloc((size_t)blocks * (size_t)k, sizeof(uint16_t));
  int status = -1;
  if (!w || !ones || !masks) goto done;
  for (int o = 0; o < c.out_c; ++o)
    for (long i = 0; i < k; ++i) {
      long wi = c.depthwise ? i * c.out_c + o : (long)o * k + i;
      if (!levels[wi]) continue;
      w[(size_t)o * words + (size_t)(i >> 6)] |= 1ULL << (i & 63);
      ones[o]++;
      masks[(size_t)(o / 16) * k + i] |= (uint16_t)(1u << (o % 16));
    }
  if (!kbnn_conv_prepare(&c, in_h, in_w, w, words, zero_low, max_level)) goto done;
  if (reference) {
    reference_conv(&c, x, levels, zero_low, out);
    status = 0;
  } else {
    kbnn_kernels kernels = kbnn_select_kernels(max_level);
    kbnn_conv_weights cw = {&c, &kernels, w, words, ones, zero_low, masks, blocks, NULL, 0,
                            {{0}}};
    status = kbnn_conv_image(&cw, NULL, x, input, out);
  }
done:
  kbnn_conv_release(&c);
  free(w);
  free(ones);
  free(masks);
  return status;
}
