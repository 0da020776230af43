/* Binary convolutions of the kbnn delegate: CONV_2D and DEPTHWISE_CONV_2D from packed weights.
 *
 * A layer's weights are the dense rows of bitkernels.h: one row of K bits per output
 * channel, K = kh * kw * in_c in the filter's [ky][kx][c] order (depthwise: K = kh * kw,
 * one row per output channel c * multiplier + m). One image is computed per call:
 *
 *   kbnn_conv c;
 *   if (!kbnn_conv_read(node, builtin, filter, in_channels, &c)) decline();
 *   kbnn_conv_prepare(&c, in_h, in_w, w, words, zero_low, KBNN_LEVEL_BEST);  // per shape
 *   kbnn_conv_weights cw = {&c, &kernels, w, words, ones, zero_low, masks, blocks,
 *                           NULL, 0, {{0}}};                 // + bias / scale / offset steps
 *   kbnn_conv_image(&cw, pool, x, KBNN_CONV_AUTO, out);      // one image
 *   kbnn_conv_release(&c);
 *
 * +-1 inputs (all values exactly +-1, or the bits y >= 0 of a folded sign) are packed
 * to bits once per image; each output position gathers its patch of bits and the dot
 * products are popcounts against the weights regrouped by 8 channels. Taps in the zero
 * padding contribute 0: their bits are 0 and a per-position-class correction (computed
 * once per input shape) removes what the popcount counted for them, so the integers are
 * exact. Real-valued inputs are summed as the stock im2col + GEMM sums them (in patch
 * order, zeros for the padding, one float32 rounding per tap; depthwise: valid taps in
 * order from the bias, as the stock depthwise kernel), so the results are bit-identical
 * to the stock kernels' (checked on the released CNNs and the random models).
 */
#ifndef KBNN_BITCONV_H_
#define KBNN_BITCONV_H_

#include <stddef.h>
#include <stdint.h>

#include "bitkernels.h"
#include "tflite_abi.h"
#include "threadpool.h"

#define KBNN_CONV_MAX_KERNEL 64    /* kh, kw, strides and dilations up to this */
#define KBNN_CONV_MAX_TAPS 64      /* depthwise kh * kw: one uint64 of taps */
#define KBNN_CONV_MAX_K (1 << 20)  /* bits of one output channel's row */
#define KBNN_CONV_MAX_SIZE 16384   /* input height and width */

enum { KBNN_CONV_AUTO = 0, KBNN_CONV_SIGN = 1 }; /* input: +-1 checked / real, or bits y >= 0 */

/* out[g * 8 + r] = popcount(x OP row g * 8 + r) over `words` words, for `groups` groups
 * of 8 rows laid out as w[(g * words + i) * 8 + r]; OP is AND if and_op, else XOR. */
typedef void (*kbnn_group_popcount)(const uint64_t *x, const uint64_t *w, size_t words,
                                    size_t groups, int and_op, int32_t *out);

/* Packs n floats to bits (bit j of word j / 64; all ceil(n / 64) words written): sign
 * set: bit = v >= 0; else bit = sign bit clear (for values known to be +-1). */
typedef void (*kbnn_pack_signs)(const float *v, int n, int sign, uint64_t *dst);

typedef struct kbnn_conv {
  int depthwise;
  int kh, kw, in_c, out_c, multiplier;
  int stride_h, stride_w, dil_h, dil_w, same;
  int activation;             /* fused: 0 none, 1 RELU, 2 RELU_N1_TO_1, 3 RELU6 */
  /* set by kbnn_conv_prepare for the current input size */
  int in_h, in_w, out_h, out_w, pad_top, pad_left;
  int pixel_words;            /* uint64 words per packed input pixel */
  int *yclass, *xclass;       /* per output row / column: its class of valid taps */
  int n_yclass, n_xclass;
  int32_t *corr;              /* conv: [yclass][xclass][out_c] padding corrections */
  int *yrange, *xrange;       /* per class: first and end valid tap row / column */
  uint64_t *pixels;           /* packed input bits of one image */
  uint64_t *grouped;          /* conv: weights by groups of 8 channels, words interleaved */
  int group_words, groups;
  int aligned;                /* patch taps start at whole words (pixel_words each) */
  kbnn_group_popcount group_popcount; /* the kernels chosen for this CPU */
  kbnn_pack_signs pack;
} kbnn_conv;

/* One float operation per output value after the dot products, as the stock graph
 * applies it: y = y * values[ch], y + values[ch] (count 1: a scalar, or out_c), or the
 * fused activation's clamp to [values[0], values[1]] (max, then min, as std::max /
 * std::min do it). */
enum { KBNN_STEP_ADD = 0, KBNN_STEP_MUL = 1, KBNN_STEP_CLAMP = 2 };
typedef struct kbnn_conv_step {
  int op, count;
  const float *values;
} kbnn_conv_step;

#define KBNN_CONV_MAX_STEPS 6

typedef struct kbnn_conv_weights {
  const kbnn_conv *c;
  const kbnn_kernels *k;
  const uint64_t *w;       /* out_c rows of `words` uint64 (bitkernels' layout) */
  size_t words;
  const int32_t *ones;     /* set bits per row */
  int zero_low;            /* levels 0/1, else -1/+1 */
  const uint16_t *masks;   /* conv with real inputs: bitkernels' ordered_sum masks */
  int blocks;
  const float *start;      /* depthwise: per channel, what the sums start from (the bias) */
  int n_steps;             /* the bias and the folded scale / offset, in graph order */
  kbnn_conv_step steps[KBNN_CONV_MAX_STEPS];
} kbnn_conv_weights;

/* Fills `c` from a CONV_2D (builtin 3) or DEPTHWISE_CONV_2D (4) node whose filter tensor
 * is `filter` ([O, kh, kw, I] or [1, kh, kw, C * M]) and whose input has `in_channels`:
 * 1 if this build computes it (fused activation none, RELU, RELU_N1_TO_1 or RELU6, SAME
 * or VALID, sizes within the limits above), else 0. */
int kbnn_conv_read(const TfLiteNode *node, int builtin, const TfLiteTensor *filter,
                   int in_channels, kbnn_conv *c);

/* The clamp step of c's fused activation: 1 and *step filled, or 0 if it has none. */
int kbnn_conv_activation_step(const kbnn_conv *c, kbnn_conv_step *step);

/* Bits per output channel's weight row: kh * kw * in_c, depthwise kh * kw. */
long kbnn_conv_row_bits(const kbnn_conv *c);

/* Output size of an in_h x in_w input as the stock kernels compute it; 0 if it is empty
 * or too large. */
int kbnn_conv_output_size(const kbnn_conv *c, int in_h, int in_w, int *out_h, int *out_w);

/* Sizes, padding and the tables for an in_h x in_w input (again after a resize): the
 * padding corrections and the kernels' own layout of the weights, with the fastest
 * kernels of at most `max_level` (KBNN_LEVEL_*). 1 on success, 0 (out of memory / bad
 * size). */
int kbnn_conv_prepare(kbnn_conv *c, int in_h, int in_w, const uint64_t *w, size_t words,
                      int zero_low, int max_level);
void kbnn_conv_release(kbnn_conv *c);

/* One image: x [in_h, in_w, in_c] -> out [out_h, out_w, out_c], the dot products of the
 * input with the +-1 (or 0/1) weights, then cw's steps. Returns 0, or -1 if out of
 * memory. */
int kbnn_conv_image(const kbnn_conv_weights *cw, kbnn_pool *pool, const float *x, int input,
                    float *out);

/* For tests (through ctypes): runs one image through kbnn_conv_image with the kernels of
 * `max_level` (reference = 0) and, if `reference` is set, through the direct scalar loop
 * instead. shape = {depthwise, kh, kw, in_c, out_c (conv) or multiplier (depthwise),
 * stride_h, stride_w, dil_h, dil_w, same, in_h, in_w, zero_low, input}; levels: one
 * byte 0/1 per weight in the filter's order ([O, kh, kw, I] or [kh, kw, C * M]), 1 = +1.
 * out must hold out_h * out_w * out_c floats. Returns 0, or -1 on bad arguments. */
int kbnn_run_conv(int max_level, int reference, const int *shape, const float *x,
                  const uint8_t *levels, float *out);

#endif /* KBNN_BITCONV_H_ */
