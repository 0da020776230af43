/* Binary CONV_2D / DEPTHWISE_CONV_2D for the kbnn delegate (see bitconv.h).
 *
 * The popcounts run on bitkernels' run-time selected kernels (reference, POPCNT, AVX2,
 * AVX-512 VPOPCNTDQ, NEON), one output position's patch against all output channels'
 * rows; positions are split across the delegate's thread pool by output row.
 */
#include "bitconv.h"

#include <stdlib.h>
#include <string.h>

#define MIN_PARALLEL_CONV (1L << 18) /* bit-ops of a layer worth splitting across threads */

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
    if (p->activation != kTfLiteActNone) return 0;
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
    if (p->activation != kTfLiteActNone) return 0;
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
  c->yclass = c->xclass = c->yrange = c->xrange = NULL;
  c->corr = NULL;
  c->pixels = NULL;
}

static int row_bit(const uint64_t *row, long i) { return (int)((row[i >> 6] >> (i & 63)) & 1); }

int kbnn_conv_prepare(kbnn_conv *c, int in_h, int in_w, const uint64_t *w, size_t words,
                      int zero_low) {
  kbnn_conv_release(c);
  if (!kbnn_conv_output_size(c, in_h, in_w, &c->out_h, &c->out_w)) return 0;
  axis_size(in_h, c->kh, c->stride_h, c->dil_h, c->same, &c->out_h, &c->pad_top);
  axis_size(in_w, c->kw, c->stride_w, c->dil_w, c->same, &c->out_w, &c->pad_left);
  c->in_h = in_h;
  c->in_w = in_w;
  c->pixel_words = (c->in_c + 63) / 64;
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
  int pw = c->pixel_words;
  memset(c->pixels, 0, sizeof(uint64_t) * (size_t)pixels * pw);
  for (long p = 0; p < pixels; ++p) {
    const float *v = x + p * c->in_c;
    uint64_t *dst = c->pixels + p * pw;
    for (int ch = 0; ch < c->in_c; ++ch) {
      uint64_t bit;
      if (sign) {
        bit = v[ch] >= 0.0f;
      } else {
        uint32_t u;
        memcpy(&u, &v[ch], 4);
        bit = (u >> 31) ^ 1u;
      }
      dst[ch >> 6] |= bit << (ch & 63);
    }
  }
}

static int all_pm1(const float *x, long n) {
  for (long i = 0; i < n; ++i) {
    uint32_t u;
    memcpy(&u, &x[i], 4);
    if ((u & 0x7fffffffu) != 0x3f800000u) return 0;
  }
  return 1;
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
  uint64_t *patch = (uint64_t *)malloc(sizeof(uint64_t) * cw->words);
  int32_t *counts = (int32_t *)malloc(sizeof(int32_t) * (size_t)c->out_c);
  if (!patch || !counts) {
    job->failed = 1;
    free(patch);
    free(counts);
    return;
  }
  int k = (int)kbnn_conv_row_bits(c), pw = c->pixel_words;
  for (int oy = begin; oy < end; ++oy) {
    int yc = c->yclass[oy], y0 = c->yrange[2 * yc], y1 = c->yrange[2 * yc + 1];
    int iy0 = oy * c->stride_h - c->pad_top;
    for (int ox = 0; ox < c->out_w; ++ox) {
      int xc = c->xclass[ox], x0 = c->xrange[2 * xc], x1 = c->xrange[2 * xc + 1];
      int ix0 = ox * c->stride_w - c->pad_left;
      memset(patch, 0, sizeof(uint64_t) * cw->words);
      for (int ky = y0; ky < y1; ++ky) {
        const uint64_t *line = c->pixels + (size_t)(iy0 + ky * c->dil_h) * c->in_w * pw;
        for (int kx = x0; kx < x1; ++kx)
          put_bits(patch, cw->words, ((long)ky * c->kw + kx) * c->in_c,
                   line + (size_t)(ix0 + kx * c->dil_w) * pw, pw);
      }
      if (cw->zero_low) cw->k->and_popcount(patch, cw->w, cw->words, (size_t)c->out_c, counts);
      else cw->k->xor_popcount(patch, cw->w, cw->words, (size_t)c->out_c, counts);
      const int32_t *corr = c->corr + ((size_t)yc * c->n_xclass + xc) * c->out_c;
      float *out = job->out + ((size_t)oy * c->out_w + ox) * c->out_c;
      for (int o = 0; o < c->out_c; ++o) {
        int32_t dot = cw->zero_low ? 2 * counts[o] - cw->ones[o] : k - 2 * counts[o];
        out[o] = (float)(dot + corr[o]);
      }
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
    int yc = c->yclass[oy], y0 = c->yrange[2 * yc], y1 = c->yrange[2 * yc + 1];
    int iy0 = oy * c->stride_h - c->pad_top;
    for (int ox = 0; ox < c->out_w; ++ox) {
      int xc = c->xclass[ox], x0 = c->xrange[2 * xc], x1 = c->xrange[2 * xc + 1];
      int ix0 = ox * c->stride_w - c->pad_left;
      for (int ky = 0; ky < c->kh; ++ky)
        for (int kx = 0; kx < c->kw; ++kx) {
          float *dst = patch + ((long)ky * c->kw + kx) * c->in_c;
          if (ky < y0 || ky >= y1 || kx < x0 || kx >= x1) {
            memset(dst, 0, sizeof(float) * (size_t)c->in_c);
          } else {
            long p = (long)(iy0 + ky * c->dil_h) * c->in_w + (ix0 + kx * c->dil_w);
            memcpy(dst, job->x + p * c->in_c, sizeof(float) * (size_t)c->in_c);
          }
        }
      cw->k->ordered_sum(patch, cw->masks, (size_t)k, (size_t)cw->blocks, cw->zero_low, sums);
      memcpy(job->out + ((size_t)oy * c->out_w + ox) * c->out_c, sums,
             sizeof(float) * (size_t)c->out_c);
    }
  }
  free(patch);
  free(sums);
}

/* Depthwise: per output channel, its valid taps only. Binary: taps as bits of a uint64;
 * real: acc = acc + x * w from 0 in tap order, as the stock kernel accumulates. */
static void depthwise_rows(void *arg, int begin, int end, int binary) {
  conv_job *job = (conv_job *)arg;
  const kbnn_conv_weights *cw = job->cw;
  const kbnn_conv *c = cw->c;
  int pw = c->pixel_words, m = c->multiplier;
  for (int oy = begin; oy < end; ++oy) {
    int yc = c->yclass[oy], y0 = c->yrange[2 * yc], y1 = c->yrange[2 * yc + 1];
    int iy0 = oy * c->stride_h - c->pad_top;
    for (int ox = 0; ox < c->out_w; ++ox) {
      int xc = c->xclass[ox], x0 = c->xrange[2 * xc], x1 = c->xrange[2 * xc + 1];
      int ix0 = ox * c->stride_w - c->pad_left;
      float *out = job->out + ((size_t)oy * c->out_w + ox) * c->out_c;
      uint64_t valid = 0;
      for (int ky = y0; ky < y1; ++ky)
        for (int kx = x0; kx < x1; ++kx) valid |= 1ULL << (ky * c->kw + kx);
      for (int ch = 0; ch < c->in_c; ++ch) {
        uint64_t xt = 0;
        if (binary)
          for (int ky = y0; ky < y1; ++ky)
            for (int kx = x0; kx < x1; ++kx) {
              long p = (long)(iy0 + ky * c->dil_h) * c->in_w + (ix0 + kx * c->dil_w);
              xt |= (uint64_t)row_bit(c->pixels + p * pw, ch) << (ky * c->kw + kx);
            }
        for (int j = 0; j < m; ++j) {
          int oc = ch * m + j;
          uint64_t wt = cw->w[(size_t)oc * cw->words];
          if (binary) {
            int dot = cw->zero_low
                          ? 2 * __builtin_popcountll(xt & wt & valid) -
                                __builtin_popcountll(wt & valid)
                          : __builtin_popcountll(valid) - 2 * __builtin_popcountll((xt ^ wt) & valid);
            out[oc] = (float)dot;
            continue;
          }
          float acc = 0.0f;
          for (int ky = y0; ky < y1; ++ky)
            for (int kx = x0; kx < x1; ++kx) {
              int t = ky * c->kw + kx;
              long p = (long)(iy0 + ky * c->dil_h) * c->in_w + (ix0 + kx * c->dil_w);
              float level = (wt >> t) & 1 ? 1.0f : (cw->zero_low ? 0.0f : -1.0f);
              acc = acc + job->x[p * c->in_c + ch] * level;
            }
          out[oc] = acc;
        }
      }
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
  if (!kbnn_conv_prepare(&c, in_h, in_w, w, words, zero_low)) goto done;
  if (reference) {
    reference_conv(&c, x, levels, zero_low, out);
    status = 0;
  } else {
    kbnn_kernels kernels = kbnn_select_kernels(max_level);
    kbnn_conv_weights cw = {&c, &kernels, w, words, ones, zero_low, masks, blocks};
    status = kbnn_conv_image(&cw, NULL, x, input, out);
  }
done:
  kbnn_conv_release(&c);
  free(w);
  free(ones);
  free(masks);
  return status;
}
