/* Evaluates the small shape-only subgraphs of a kbnn file (the run-time zero, the byte
 * table, a flatten's target shape) the way the stock kernels compute them.
 *
 * These values depend on constants and on the input's shape, never on its data, so the
 * delegate can evaluate them when it prepares, check them against what the layout says,
 * and then claim the nodes instead of letting the runtime recompute them at every invoke.
 * Only int32 / float32 tensors of up to KBNN_SHAPE_MAX_VALUES values, rank <= 4, and the
 * ops listed in shapeeval.c are evaluated; anything else is "not evaluable" and stays
 * with the runtime.
 *
 *   kbnn_shape_env env;
 *   kbnn_shape_env_init(&env, ctx->tensors_size);
 *   kbnn_shape_op op;
 *   if (kbnn_shape_op_read(ctx, node_index, &op) && kbnn_shape_eval(ctx, &env, &op)) ...
 *   ... kbnn_shape_get(&env, tensor) ...
 *   kbnn_shape_env_free(&env);
 */
#ifndef KBNN_SHAPEEVAL_H_
#define KBNN_SHAPEEVAL_H_

#include <stddef.h>

#include "tflite_abi.h"

#define KBNN_SHAPE_MAX_VALUES 65536
#define KBNN_SHAPE_MAX_RANK 4

typedef struct {
  int known;  /* 1 when evaluated here (owned) */
  TfLiteType type; /* kTfLiteInt32 or kTfLiteFloat32 */
  int rank;
  int dims[KBNN_SHAPE_MAX_RANK];
  long n;
  void *data;
} kbnn_shape_value;

typedef struct {
  kbnn_shape_value *values; /* one per tensor */
  size_t n;
} kbnn_shape_env;

int kbnn_shape_env_init(kbnn_shape_env *env, size_t tensors);
void kbnn_shape_env_free(kbnn_shape_env *env);

#define KBNN_SHAPE_MAX_INPUTS 8

/* A node as the evaluator needs it, copied while the delegate prepares (the runtime lets a
 * delegate read nodes only then; kernels re-evaluate from these copies). */
typedef struct {
  int op, n_inputs, inputs[KBNN_SHAPE_MAX_INPUTS], output;
  int has_params, activation;                         /* ADD / SUB / MUL */
  TfLiteStridedSliceParams slice;                     /* STRIDED_SLICE */
  int values_count, axis;                             /* PACK */
  TfLiteType out_type;                                /* SHAPE */
} kbnn_shape_op;

/* Copies node `index` (supported op, one output, few inputs) into `op`: 1, else 0. */
int kbnn_shape_op_read(TfLiteContext *ctx, int index, kbnn_shape_op *op);

/* Evaluates `op` if all its inputs are constants or values evaluated before; stores its
 * output. 1 on success, 0 if not evaluable. */
int kbnn_shape_eval(TfLiteContext *ctx, kbnn_shape_env *env, const kbnn_shape_op *op);

/* The evaluated value of tensor t, or NULL. */
const kbnn_shape_value *kbnn_shape_get(const kbnn_shape_env *env, int t);

#endif /* KBNN_SHAPEEVAL_H_ */
