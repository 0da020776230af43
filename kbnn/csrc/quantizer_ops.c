/* TensorFlow ops for the training step of kbnn's sign quantizers, one pass each.
 *
 * TensorFlow builds sign(x) with sign(0) = +1 from two ops (x >= 0, then a select
 * of broadcast scalars), the straight-through mask |x| <= clip from two more, and
 * applies the mask as a cast and a multiply: six passes over an activation, each
 * with its own output buffer (ten for the stochastic sign, whose hard sigmoid is
 * four). These ops do the same arithmetic, forward in one pass and backward in one:
 *
 *   KbnnSign(x)                  y = x >= 0 ? 1 : -1           (NaN: -1)
 *   KbnnSignAndMask(x, clip)     y as above, keep = |x| <= clip (NaN: false)
 *   KbnnStochasticSignAndMask(x, noise, clip)
 *                                y = noise < hard_sigmoid(x) ? 1 : -1, keep as above
 *   KbnnMaskedGradient(dy, keep) dx = dy * (float)keep          (dy * 0 where not kept)
 *
 * Outputs are bit-identical to the TensorFlow ops they replace (kbnn.quantizers
 * runs those where this library is not built; tests/test_quantizer_ops.py compares
 * both on special values and random data). float32 on CPU only. The loops are
 * plain C that the compiler vectorizes. Registered when tf.load_op_library loads
 * the library (kbnn.quantizer_ops).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "tf_kernel_abi.h"

#define KBNN_MAX_DIMS 32

/* The element-wise kernels. */

static void sign_kernel(const float *x, float *y, int64_t n) {
  for (int64_t i = 0; i < n; i++) y[i] = x[i] >= 0.0f ? 1.0f : -1.0f;
}

static void sign_and_mask_kernel(const float *x, float clip, float *y, uint8_t *keep,
                                 int64_t n) {
  for (int64_t i = 0; i < n; i++) {
    float v = x[i];
    y[i] = v >= 0.0f ? 1.0f : -1.0f;
    keep[i] = (v < 0.0f ? -v : v) <= clip; /* |v| <= clip; false for NaN */
  }
}

/* hard_sigmoid as TensorFlow computes it, maximum(minimum((x + 1) / 2, 1), 0) (NaN stays
 * NaN), then +1 where noise < it. */
static void stochastic_sign_and_mask_kernel(const float *x, const float *noise, float clip,
                                            float *y, uint8_t *keep, int64_t n) {
  for (int64_t i = 0; i < n; i++) {
    float v = x[i], p = (v + 1.0f) / 2.0f;
    p = 1.0f < p ? 1.0f : p;
    p = p < 0.0f ? 0.0f : p;
    y[i] = noise[i] < p ? 1.0f : -1.0f;
    keep[i] = (v < 0.0f ? -v : v) <= clip;
  }
}

static void masked_gradient_kernel(const float *dy, const uint8_t *keep, float *dx,
                                   int64_t n) {
  for (int64_t i = 0; i < n; i++) dx[i] = dy[i] * (float)keep[i];
}

/* TensorFlow plumbing. */

static void fail(TF_OpKernelContext *ctx, TF_Status *status, const char *message) {
  TF_SetStatus(status, TF_INVALID_ARGUMENT, message);
  TF_OpKernelContext_Failure(ctx, status);
}

/* Input `i` and its shape; NULL (the failure reported) if it cannot be read. */
static TF_Tensor *input(TF_OpKernelContext *ctx, int i, int64_t *dims, int *rank,
                        TF_Status *status) {
  TF_Tensor *tensor = NULL;
  TF_GetInput(ctx, i, &tensor, status);
  if (TF_GetCode(status) != TF_OK) {
    TF_OpKernelContext_Failure(ctx, status);
    return NULL;
  }
  *rank = TF_NumDims(tensor);
  if (*rank > KBNN_MAX_DIMS) {
    TF_DeleteTensor(tensor);
    fail(ctx, status, "kbnn quantizer ops take tensors of rank <= 32");
    return NULL;
  }
  for (int d = 0; d < *rank; d++) dims[d] = TF_Dim(tensor, d);
  return tensor;
}

static int same_shape(const int64_t *a, int rank_a, const int64_t *b, int rank_b) {
  if (rank_a != rank_b) return 0;
  for (int d = 0; d < rank_a; d++)
    if (a[d] != b[d]) return 0;
  return 1;
}

static TF_Tensor *output(TF_OpKernelContext *ctx, int i, TF_DataType dtype, size_t itemsize,
                         const int64_t *dims, int rank, int64_t n, TF_Status *status) {
  TF_Tensor *tensor = TF_AllocateOutput(ctx, i, dtype, dims, rank, (size_t)n * itemsize,
                                        status);
  if (TF_GetCode(status) != TF_OK) {
    TF_OpKernelContext_Failure(ctx, status);
    return NULL;
  }
  return tensor;
}

static void *no_state(TF_OpKernelConstruction *ctx) {
  (void)ctx;
  return NULL;
}

static void *clip_state(TF_OpKernelConstruction *ctx) {
  float *clip = malloc(sizeof *clip);
  TF_Status *status = TF_NewStatus();
  if (!clip) {
    TF_SetStatus(status, TF_INVALID_ARGUMENT, "kbnn quantizer op: out of memory");
    TF_OpKernelConstruction_Failure(ctx, status);
    TF_DeleteStatus(status);
    return NULL;
  }
  TF_OpKernelConstruction_GetAttrFloat(ctx, "clip_value", clip, status);
  if (TF_GetCode(status) != TF_OK) TF_OpKernelConstruction_Failure(ctx, status);
  TF_DeleteStatus(status);
  return clip;
}

static void free_state(void *state) { free(state); }

static void sign_compute(void *state, TF_OpKernelContext *ctx) {
  (void)state;
  TF_Status *status = TF_NewStatus();
  int64_t dims[KBNN_MAX_DIMS];
  int rank;
  TF_Tensor *x = input(ctx, 0, dims, &rank, status);
  if (x) {
    int64_t n = TF_TensorElementCount(x);
    TF_Tensor *y = output(ctx, 0, TF_FLOAT, sizeof(float), dims, rank, n, status);
    if (y) {
      sign_kernel(TF_TensorData(x), TF_TensorData(y), n);
      TF_DeleteTensor(y);
    }
    TF_DeleteTensor(x);
  }
  TF_DeleteStatus(status);
}

/* Input 0 (x), and input 1 (uniform noise) when `stochastic`, to (sign, keep). */
static void binarize_and_mask(void *state, TF_OpKernelContext *ctx, int stochastic) {
  TF_Status *status = TF_NewStatus();
  int64_t dims[KBNN_MAX_DIMS], noise_dims[KBNN_MAX_DIMS];
  int rank, noise_rank;
  TF_Tensor *x = input(ctx, 0, dims, &rank, status);
  TF_Tensor *noise = x && stochastic ? input(ctx, 1, noise_dims, &noise_rank, status) : NULL;
  if (x && stochastic && noise && !same_shape(dims, rank, noise_dims, noise_rank)) {
    fail(ctx, status, "KbnnStochasticSignAndMask: x and noise must have the same shape");
  } else if (x && (noise || !stochastic)) {
    int64_t n = TF_TensorElementCount(x);
    float clip = *(float *)state;
    TF_Tensor *y = output(ctx, 0, TF_FLOAT, sizeof(float), dims, rank, n, status);
    TF_Tensor *keep = y ? output(ctx, 1, TF_BOOL, 1, dims, rank, n, status) : NULL;
    if (keep && stochastic)
      stochastic_sign_and_mask_kernel(TF_TensorData(x), TF_TensorData(noise), clip,
                                      TF_TensorData(y), TF_TensorData(keep), n);
    else if (keep)
      sign_and_mask_kernel(TF_TensorData(x), clip, TF_TensorData(y), TF_TensorData(keep), n);
    if (keep) TF_DeleteTensor(keep);
    if (y) TF_DeleteTensor(y);
  }
  if (noise) TF_DeleteTensor(noise);
  if (x) TF_DeleteTensor(x);
  TF_DeleteStatus(status);
}

static void sign_and_mask_compute(void *state, TF_OpKernelContext *ctx) {
  binarize_and_mask(state, ctx, 0);
}

static void stochastic_sign_and_mask_compute(void *state, TF_OpKernelContext *ctx) {
  binarize_and_mask(state, ctx, 1);
}

static void masked_gradient_compute(void *state, TF_OpKernelContext *ctx) {
  (void)state;
  TF_Status *status = TF_NewStatus();
  int64_t dims[KBNN_MAX_DIMS], keep_dims[KBNN_MAX_DIMS];
  int rank, keep_rank;
  TF_Tensor *dy = input(ctx, 0, dims, &rank, status);
  TF_Tensor *keep = dy ? input(ctx, 1, keep_dims, &keep_rank, status) : NULL;
  if (keep) {
    if (!same_shape(dims, rank, keep_dims, keep_rank)) {
      fail(ctx, status, "KbnnMaskedGradient: dy and keep must have the same shape");
    } else {
      int64_t n = TF_TensorElementCount(dy);
      TF_Tensor *dx = output(ctx, 0, TF_FLOAT, sizeof(float), dims, rank, n, status);
      if (dx) {
        masked_gradient_kernel(TF_TensorData(dy), TF_TensorData(keep), TF_TensorData(dx), n);
        TF_DeleteTensor(dx);
      }
    }
    TF_DeleteTensor(keep);
  }
  if (dy) TF_DeleteTensor(dy);
  TF_DeleteStatus(status);
}

/* Every output has the shape of input 0. */
static void shape_of_first_input(TF_ShapeInferenceContext *ctx, TF_Status *status,
                                 int num_outputs) {
  TF_ShapeHandle *shape = TF_NewShapeHandle();
  TF_ShapeInferenceContextGetInput(ctx, 0, shape, status);
  for (int i = 0; i < num_outputs && TF_GetCode(status) == TF_OK; i++)
    TF_ShapeInferenceContextSetOutput(ctx, i, shape, status);
  TF_DeleteShapeHandle(shape);
}

static void one_output_shape(TF_ShapeInferenceContext *ctx, TF_Status *status) {
  shape_of_first_input(ctx, status, 1);
}

static void two_output_shapes(TF_ShapeInferenceContext *ctx, TF_Status *status) {
  shape_of_first_input(ctx, status, 2);
}

static void define(const char *name, const char *const *inputs, const char *const *outputs,
                   const char *attr, void (*shape)(TF_ShapeInferenceContext *, TF_Status *),
                   void *(*create)(TF_OpKernelConstruction *),
                   void (*compute)(void *, TF_OpKernelContext *), TF_Status *status) {
  TF_OpDefinitionBuilder *op = TF_NewOpDefinitionBuilder(name);
  for (; *inputs; inputs++) TF_OpDefinitionBuilderAddInput(op, *inputs);
  for (; *outputs; outputs++) TF_OpDefinitionBuilderAddOutput(op, *outputs);
  if (attr) TF_OpDefinitionBuilderAddAttr(op, attr);
  TF_OpDefinitionBuilderSetShapeInferenceFunction(op, shape);
  TF_RegisterOpDefinition(op, status);
  if (TF_GetCode(status) != TF_OK) {
    fprintf(stderr, "kbnn: could not register the op %s\n", name);
    return;
  }
  TF_RegisterKernelBuilder(name, TF_NewKernelBuilder(name, "CPU", create, compute, free_state),
                           status);
  if (TF_GetCode(status) != TF_OK) fprintf(stderr, "kbnn: no CPU kernel for %s\n", name);
}

__attribute__((constructor)) static void register_ops(void) {
  static const char *const x[] = {"x: float", NULL}, *const y[] = {"y: float", NULL},
                           *const y_keep[] = {"y: float", "keep: bool", NULL},
                           *const dy_keep[] = {"dy: float", "keep: bool", NULL},
                           *const x_noise[] = {"x: float", "noise: float", NULL},
                           *const dx[] = {"dx: float", NULL};
  TF_Status *status = TF_NewStatus();
  define("KbnnSign", x, y, NULL, one_output_shape, no_state, sign_compute, status);
  define("KbnnSignAndMask", x, y_keep, "clip_value: float", two_output_shapes, clip_state,
         sign_and_mask_compute, status);
  define("KbnnStochasticSignAndMask", x_noise, y_keep, "clip_value: float", two_output_shapes,
         clip_state, stochastic_sign_and_mask_compute, status);
  define("KbnnMaskedGradient", dy_keep, dx, NULL, one_output_shape, no_state,
         masked_gradient_compute, status);
  TF_DeleteStatus(status);
}
