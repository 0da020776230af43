/* Shape-only subgraph evaluation (see shapeeval.h).
 *
 * Supported ops, each as the stock TFLite kernel defines it for int32 / float32:
 * SHAPE (int32 out), STRIDED_SLICE (begin/end/shrink masks, no ellipsis / new axis),
 * ADD / SUB / MUL (numpy broadcasting, no fused activation; int32 wraps), RIGHT_SHIFT
 * (int32, shifts 0..31 only), RANGE (int32, positive delta), RESHAPE (shape tensor, one -1
 * at most), CAST (int32 -> float32 / int32), PACK (axis 0). Every size is checked.
 */
#include "shapeeval.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum {
  OP_ADD = 0, OP_MUL = 18, OP_RESHAPE = 22, OP_SUB = 41, OP_STRIDED_SLICE = 45, OP_CAST = 53,
  OP_SHAPE = 77, OP_PACK = 83, OP_RANGE = 96, OP_RIGHT_SHIFT = 161
};

typedef struct { int values_count; int axis; } pack_params;   /* TfLitePackParams */
typedef struct { TfLiteType out_type; } shape_params;         /* TfLiteShapeParams */

int kbnn_shape_env_init(kbnn_shape_env *env, size_t tensors) {
  env->n = tensors;
  env->values = (kbnn_shape_value *)calloc(tensors + 1, sizeof(kbnn_shape_value));
  return env->values != NULL;
}

void kbnn_shape_env_free(kbnn_shape_env *env) {
  if (!env->values) return;
  for (size_t i = 0; i < env->n; ++i) free(env->values[i].data);
  free(env->values);
  env->values = NULL;
}

const kbnn_shape_value *kbnn_shape_get(const kbnn_shape_env *env, int t) {
  if (!env->values || t < 0 || (size_t)t >= env->n || !env->values[t].known) return NULL;
  return &env->values[t];
}

/* A constant int32/float32 tensor as a value that points at the file's data. */
static int load(TfLiteContext *ctx, const kbnn_shape_env *env, int t, kbnn_shape_value *v) {
  const kbnn_shape_value *known = kbnn_shape_get(env, t);
  if (known) {
    *v = *known;
    return 1;
  }
  if (t < 0 || (size_t)t >= ctx->tensors_size) return 0;
  const TfLiteTensor *c = &ctx->tensors[t];
  if (c->allocation_type != kTfLiteMmapRo || !c->data.raw || !c->dims) return 0;
  if (c->type != kTfLiteInt32 && c->type != kTfLiteFloat32) return 0;
  if (c->dims->size < 0 || c->dims->size > KBNN_SHAPE_MAX_RANK) return 0;
  memset(v, 0, sizeof *v);
  v->type = c->type;
  v->rank = c->dims->size;
  v->n = 1;
  for (int i = 0; i < v->rank; ++i) {
    if (c->dims->data[i] < 0) return 0;
    v->dims[i] = c->dims->data[i];
    v->n *= v->dims[i];
    if (v->n > KBNN_SHAPE_MAX_VALUES) return 0;
  }
  if (c->bytes < (size_t)v->n * 4) return 0;
  v->data = c->data.raw;
  return 1;
}

static int input(TfLiteContext *ctx, const kbnn_shape_env *env, const kbnn_shape_op *node, int i,
                 kbnn_shape_value *v) {
  if (i >= node->n_inputs) return 0;
  return load(ctx, env, node->inputs[i], v);
}

static int store(kbnn_shape_env *env, const kbnn_shape_op *node, TfLiteContext *ctx,
                 kbnn_shape_value *v) {
  int t = node->output;
  if (t < 0 || (size_t)t >= env->n) return 0;
  /* The output tensor's declared type must be the one computed. */
  if (ctx->tensors[t].type != v->type) return 0;
  free(env->values[t].data);
  env->values[t] = *v;
  env->values[t].known = 1;
  return 1;
}

static int new_value(kbnn_shape_value *v, TfLiteType type, int rank, const int *dims) {
  memset(v, 0, sizeof *v);
  if (rank < 0 || rank > KBNN_SHAPE_MAX_RANK) return 0;
  v->type = type;
  v->rank = rank;
  v->n = 1;
  for (int i = 0; i < rank; ++i) {
    if (dims[i] < 0) return 0;
    v->dims[i] = dims[i];
    v->n *= dims[i];
    if (v->n > KBNN_SHAPE_MAX_VALUES) return 0;
  }
  v->data = calloc((size_t)v->n + 1, 4);
  return v->data != NULL;
}

static int32_t *i32(const kbnn_shape_value *v) { return (int32_t *)v->data; }
static float *f32(const kbnn_shape_value *v) { return (float *)v->data; }

/* Flat index into v of the broadcast position `pos` (rank r, right-aligned). */
static long broadcast_index(const kbnn_shape_value *v, const int *pos, int r) {
  long index = 0;
  for (int i = 0; i < v->rank; ++i) {
    int p = pos[r - v->rank + i];
    index = index * v->dims[i] + (v->dims[i] == 1 ? 0 : p);
  }
  return index;
}

static int binary(const kbnn_shape_op *node, int op, const kbnn_shape_value *a,
                  const kbnn_shape_value *b, kbnn_shape_value *out) {
  if (a->type != b->type) return 0;
  if (op == OP_RIGHT_SHIFT && a->type != kTfLiteInt32) return 0;
  if (op != OP_RIGHT_SHIFT) {
    /* ADD, SUB, MUL params start with the fused activation */
    if (!node->has_params || node->activation != kTfLiteActNone) return 0;
  }
  int r = a->rank > b->rank ? a->rank : b->rank, dims[KBNN_SHAPE_MAX_RANK];
  for (int i = 0; i < r; ++i) {
    int da = i - (r - a->rank) >= 0 ? a->dims[i - (r - a->rank)] : 1;
    int db = i - (r - b->rank) >= 0 ? b->dims[i - (r - b->rank)] : 1;
    if (da != db && da != 1 && db != 1) return 0;
    dims[i] = da == 1 ? db : da;
  }
  if (!new_value(out, a->type, r, dims)) return 0;
  int pos[KBNN_SHAPE_MAX_RANK] = {0};
  for (long k = 0; k < out->n; ++k) {
    long rest = k;
    for (int i = r - 1; i >= 0; --i) {
      pos[i] = (int)(rest % dims[i]);
      rest /= dims[i];
    }
    long ia = broadcast_index(a, pos, r), ib = broadcast_index(b, pos, r);
    if (a->type == kTfLiteInt32) {
      uint32_t x = (uint32_t)i32(a)[ia], y = (uint32_t)i32(b)[ib], z;
      if (op == OP_RIGHT_SHIFT) {
        if (i32(b)[ib] < 0 || i32(b)[ib] > 31) return 0;
        z = (uint32_t)(i32(a)[ia] >> i32(b)[ib]);
      } else {
        z = op == OP_ADD ? x + y : op == OP_SUB ? x - y : x * y;
      }
      i32(out)[k] = (int32_t)z;
    } else {
      float x = f32(a)[ia], y = f32(b)[ib];
      f32(out)[k] = op == OP_ADD ? x + y : op == OP_SUB ? x - y : x * y;
    }
  }
  return 1;
}

static int strided_slice(const kbnn_shape_op *node, const kbnn_shape_value *in,
                         const kbnn_shape_value *begin, const kbnn_shape_value *end,
                         const kbnn_shape_value *strides, kbnn_shape_value *out) {
  const TfLiteStridedSliceParams *p = &node->slice;
  if (!node->has_params || p->ellipsis_mask || p->new_axis_mask || p->offset) return 0;
  int r = in->rank;
  if (begin->type != kTfLiteInt32 || end->type != kTfLiteInt32 || strides->type != kTfLiteInt32 ||
      begin->rank != 1 || begin->n != r || end->n != r || strides->n != r || r < 1)
    return 0;
  int start[KBNN_SHAPE_MAX_RANK], step[KBNN_SHAPE_MAX_RANK], count[KBNN_SHAPE_MAX_RANK];
  int dims[KBNN_SHAPE_MAX_RANK], out_rank = 0;
  for (int i = 0; i < r; ++i) {
    int d = in->dims[i], s = i32(strides)[i], b = i32(begin)[i], e = i32(end)[i];
    if (s == 0) return 0;
    if (p->shrink_axis_mask & (1 << i)) {
      if (b < 0) b += d;
      if (b < 0 || b >= d) return 0;
      start[i] = b, step[i] = 1, count[i] = 1;
      continue;
    }
    if (s < 0) return 0; /* not needed by kbnn files */
    if (p->begin_mask & (1 << i)) b = 0;
    else {
      if (b < 0) b += d;
      b = b < 0 ? 0 : b > d ? d : b;
    }
    if (p->end_mask & (1 << i)) e = d;
    else {
      if (e < 0) e += d;
      e = e < 0 ? 0 : e > d ? d : e;
    }
    start[i] = b, step[i] = s, count[i] = e > b ? (e - b + s - 1) / s : 0;
    dims[out_rank++] = count[i];
  }
  if (!new_value(out, in->type, out_rank, dims)) return 0;
  long total = 1;
  for (int i = 0; i < r; ++i) total *= count[i];
  if (total != out->n) return 0;
  for (long k = 0; k < total; ++k) {
    long rest = k, src = 0;
    int pos[KBNN_SHAPE_MAX_RANK];
    for (int i = r - 1; i >= 0; --i) {
      pos[i] = (int)(rest % count[i]);
      rest /= count[i];
    }
    for (int i = 0; i < r; ++i) src = src * in->dims[i] + start[i] + (long)pos[i] * step[i];
    if (src < 0 || src >= in->n) return 0;
    i32(out)[k] = i32(in)[src]; /* 4-byte copy, any type */
  }
  return 1;
}

int kbnn_shape_op_read(TfLiteContext *ctx, int index, kbnn_shape_op *op) {
  TfLiteNode *node = NULL;
  TfLiteRegistration *reg = NULL;
  memset(op, 0, sizeof *op);
  if (ctx->GetNodeAndRegistration(ctx, index, &node, &reg) != kTfLiteOk || !node || !reg ||
      !node->inputs || !node->outputs || node->outputs->size != 1 ||
      node->inputs->size > KBNN_SHAPE_MAX_INPUTS)
    return 0;
  op->op = reg->builtin_code;
  op->n_inputs = node->inputs->size;
  for (int i = 0; i < op->n_inputs; ++i) op->inputs[i] = node->inputs->data[i];
  op->output = node->outputs->data[0];
  op->out_type = kTfLiteInt32;
  const void *p = node->builtin_data;
  switch (op->op) {
    case OP_ADD: case OP_SUB: case OP_MUL: /* their params open with the activation */
      if (!p) return 0;
      op->has_params = 1;
      op->activation = *(const int *)p;
      return 1;
    case OP_STRIDED_SLICE:
      if (!p) return 0;
      op->has_params = 1;
      op->slice = *(const TfLiteStridedSliceParams *)p;
      return 1;
    case OP_PACK:
      if (!p) return 0;
      op->has_params = 1;
      op->values_count = ((const pack_params *)p)->values_count;
      op->axis = ((const pack_params *)p)->axis;
      return 1;
    case OP_SHAPE:
      if (p) op->out_type = ((const shape_params *)p)->out_type;
      return 1;
    case OP_RIGHT_SHIFT: case OP_RANGE: case OP_RESHAPE: case OP_CAST:
      return 1;
    default:
      return 0;
  }
}

int kbnn_shape_eval(TfLiteContext *ctx, kbnn_shape_env *env, const kbnn_shape_op *node) {
  if (node->output < 0 || (size_t)node->output >= ctx->tensors_size) return 0;
  kbnn_shape_value a, b, c, d, out;
  memset(&out, 0, sizeof out);
  int ok = 0;
  switch (node->op) {
    case OP_SHAPE: {
      if (node->n_inputs != 1 || node->out_type != kTfLiteInt32) return 0;
      int t = node->inputs[0];
      if (t < 0 || (size_t)t >= ctx->tensors_size || !ctx->tensors[t].dims) return 0;
      const TfLiteIntArray *shape = ctx->tensors[t].dims;
      int n = shape->size;
      if (n < 0 || n > 8 || !new_value(&out, kTfLiteInt32, 1, &n)) return 0;
      for (int i = 0; i < n; ++i) i32(&out)[i] = shape->data[i];
      ok = 1;
      break;
    }
    case OP_STRIDED_SLICE:
      ok = node->n_inputs == 4 && input(ctx, env, node, 0, &a) && input(ctx, env, node, 1, &b) &&
           input(ctx, env, node, 2, &c) && input(ctx, env, node, 3, &d) &&
           strided_slice(node, &a, &b, &c, &d, &out);
      break;
    case OP_ADD: case OP_SUB: case OP_MUL: case OP_RIGHT_SHIFT:
      ok = node->n_inputs == 2 && input(ctx, env, node, 0, &a) &&
           input(ctx, env, node, 1, &b) && binary(node, node->op, &a, &b, &out);
      break;
    case OP_RANGE: {
      if (node->n_inputs != 3 || !input(ctx, env, node, 0, &a) ||
          !input(ctx, env, node, 1, &b) || !input(ctx, env, node, 2, &c))
        return 0;
      if (a.type != kTfLiteInt32 || b.type != kTfLiteInt32 || c.type != kTfLiteInt32 ||
          a.n != 1 || b.n != 1 || c.n != 1 || a.rank || b.rank || c.rank)
        return 0;
      long start = i32(&a)[0], limit = i32(&b)[0], delta = i32(&c)[0];
      if (delta <= 0 || limit < start) return 0;
      long n = (limit - start + delta - 1) / delta;
      int dim0 = (int)n;
      if (n > KBNN_SHAPE_MAX_VALUES || !new_value(&out, kTfLiteInt32, 1, &dim0)) return 0;
      for (long k = 0; k < n; ++k) i32(&out)[k] = (int32_t)(start + k * delta);
      ok = 1;
      break;
    }
    case OP_RESHAPE: {
      if (node->n_inputs != 2 || !input(ctx, env, node, 0, &a) || !input(ctx, env, node, 1, &b))
        return 0;
      if (b.type != kTfLiteInt32 || b.rank != 1 || b.n > KBNN_SHAPE_MAX_RANK) return 0;
      int dims[KBNN_SHAPE_MAX_RANK], unknown = -1;
      long known = 1;
      for (int i = 0; i < b.n; ++i) {
        dims[i] = i32(&b)[i];
        if (dims[i] == -1 && unknown < 0) unknown = i;
        else if (dims[i] < 0) return 0;
        else known *= dims[i];
      }
      if (unknown >= 0) {
        if (known == 0 || a.n % known) return 0;
        dims[unknown] = (int)(a.n / known);
      } else if (known != a.n) {
        return 0;
      }
      if (!new_value(&out, a.type, (int)b.n, dims) || out.n != a.n) return 0;
      memcpy(out.data, a.data, (size_t)a.n * 4);
      ok = 1;
      break;
    }
    case OP_CAST: {
      if (node->n_inputs != 1 || !input(ctx, env, node, 0, &a) || a.type != kTfLiteInt32)
        return 0;
      int t = node->output;
      if (t < 0 || (size_t)t >= ctx->tensors_size) return 0;
      TfLiteType to = ctx->tensors[t].type;
      if ((to != kTfLiteFloat32 && to != kTfLiteInt32) || !new_value(&out, to, a.rank, a.dims))
        return 0;
      for (long k = 0; k < a.n; ++k) {
        if (to == kTfLiteFloat32) f32(&out)[k] = (float)i32(&a)[k];
        else i32(&out)[k] = i32(&a)[k];
      }
      ok = 1;
      break;
    }
    case OP_PACK: {
      int n = node->n_inputs;
      if (!node->has_params || node->values_count != n || n < 1) return 0;
      if (!input(ctx, env, node, 0, &a) || a.rank != 0) return 0; /* scalars only */
      if (node->axis != 0 && node->axis != -1) return 0;
      if (!new_value(&out, a.type, 1, &n)) return 0;
      for (int i = 0; i < n; ++i) {
        if (!input(ctx, env, node, i, &b) || b.rank != 0 || b.type != a.type || b.n != 1) {
          free(out.data);
          return 0;
        }
        i32(&out)[i] = i32(&b)[0];
      }
      ok = 1;
      break;
    }
    default:
      return 0;
  }
  if (!ok || !store(env, node, ctx, &out)) {
    free(out.data);
    return 0;
  }
  return 1;
}
