/* The kbnn delegate: recognises the packed binary layers of a kbnn export and runs them.
 *
 * How a layer is recognised (layout version 1, written by kbnn.export.graph):
 *
 *   unpack design   BITWISE_XOR(const int32 words, zero) -> BITCAST uint8 -> RESHAPE
 *                   -> CAST int32 -> GATHER(byte table [256, 8]) -> RESHAPE / prefix
 *                   STRIDED_SLICE ... -> FULLY_CONNECTED weights [N, K], or CONV_2D filter
 *                   [O, kh, kw, I] / DEPTHWISE_CONV_2D filter [1, kh, kw, C * M] (any
 *                   strides, dilation, SAME / VALID, fused RELU / RELU_N1_TO_1 / RELU6;
 *                   computed by bitconv.c)
 *   xor-popcount    BITWISE_XOR(packed signs [B, 1, W], const int32 words [N, W])
 *                   -> BITCAST uint16 -> CAST int32 -> RESHAPE -> GATHER(const popcount
 *                   table [65536]) -> SUM(last axis) -> MUL(c) -> SUB(k, .)
 *
 * each followed by the per-channel MUL / ADD that fold a batch norm. Every tensor
 * inside a chain must have exactly one consumer, every size must agree with the
 * number of packed words, every constant is checked; anything else is left to the
 * runtime. Run-time values the file computes (the zero, the byte table) are checked:
 * where their ops are shape-only (shapeeval.c), the delegate evaluates them when it
 * prepares (again after a resize), checks them against the layout and claims those nodes
 * too; otherwise it reads and checks them at every invoke. A mismatch fails with a
 * message instead of computing something else.
 *
 * Also claimed where exactly equivalent: the flatten RESHAPE before a layer (the layer
 * reads rows of k values either way) and the sign quantizer SELECT_V2(GREATER_EQUAL(y, 0),
 * 1, -1) before a binary layer (bits y >= 0). Layers in one partition hand activations to
 * each other in the kernel's buffers, so a whole MLP runs as one delegate kernel.
 *
 * Arithmetic: binary (+-1) inputs are packed to bits and the dot products are
 * popcounts (exact integers); real-valued inputs are summed as +x or -x per weight bit
 * in input order, one float32 rounding per input, as the stock FULLY_CONNECTED sums
 * them; then the same float operations as the stock graph, in its order (the build
 * turns off FMA contraction so they round the same). Outputs are bit-identical to the
 * stock runtime's wherever it sums in input order (checked on the released models).
 * Where a real-valued dense layer's output is read only as signs by the next layer (the
 * first layer of an MLP), the sign path decides each row's sign from integer sums and a
 * proven bound on that float32 sum, and sums in input order only the rows the bound
 * leaves open (see run_sign_path): the same signs, several times faster.
 */
#define _POSIX_C_SOURCE 200112L
#include "delegate.h"

#include <math.h> /* INFINITY */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bitconv.h"
#include "bitkernels.h"
#include "shapeeval.h"
#include "threadpool.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "kbnn's packed words are little-endian; this delegate builds for little-endian CPUs only"
#endif

#define KBNN_LAYOUT_VERSION 1
#define KBNN_LAYOUT_METADATA "kbnn_layout" /* kbnn/export/description.py writes it */
#define MAX_CHAIN 16
#define MAX_TAIL 4
#define MAX_POPCOUNT_BITS (1 << 24) /* counts stay exact in float32 */
#define MIN_PARALLEL_WORK (1L << 18) /* weights of a layer worth splitting across threads */

typedef struct kbnn_layer kbnn_layer;

typedef struct kbnn_state {
  kbnn_delegate_options options;
  kbnn_kernels kernels;
  kbnn_pool *pool;
  int pool_threads;
  int claimed;
  float table_pm1[2048]; /* byte table with levels -1/+1, as the file computes it */
  float table_01[2048];  /* ... with levels 0/1 */
  /* Layers matched by Prepare, handed to the kernels' init during the same call. */
  kbnn_layer *pending;
  int n_pending;
  int *pending_aux; /* shape-only nodes claimed with them (the zero, byte table, flatten shape) */
  kbnn_shape_op *pending_aux_ops;
  int n_pending_aux;
} kbnn_state;

enum { DESIGN_UNPACK = 1, DESIGN_XOR = 2 };
enum { TAIL_MUL = 1, TAIL_ADD = 2 };

typedef struct {
  int op;
  int count; /* 1 (scalar) or rows */
  const float *values;
} tail_op;

struct kbnn_layer {
  int design;
  int nodes[MAX_TAIL + 12]; /* nodes that compute the layer's output */
  int n_nodes;
  int chain[MAX_CHAIN];      /* unpack design: nodes that unpack the words (no output used) */
  int n_chain;
  int anchor;        /* the FULLY_CONNECTED (unpack) or BITWISE_XOR (xor) node */
  int weights;       /* unpack design: the unpacked-weights tensor the chain ends in */
  int zero_low;      /* unpack design: levels 0/1 (else -1/+1) */
  int input, zero, table, output;
  int rows, k;       /* N outputs; K bits per row */
  int in_words32;    /* xor design: int32 words per input row */
  const int32_t *packed; /* the file's words */
  int packed_words;
  size_t words;      /* uint64 words per row in `w`, a multiple of KBNN_ROW_WORDS */
  uint64_t *w;       /* rows x words, rows padded with zero bits */
  uint16_t *masks;   /* unpack design: per block of 16 rows and per input, the rows' bits */
  int blocks;        /* ceil(rows / 16) */
  int32_t *ones;     /* set bits per row */
  const float *bias; /* FULLY_CONNECTED bias (rows values) or NULL */
  float c_mul, c_sub;
  tail_op tail[MAX_TAIL];
  int n_tail;
  int declined_at; /* source line where matching stopped, for verbose reports */
  int flatten;       /* RESHAPE node folded before the FULLY_CONNECTED, or -1 */
  int flat_shape;    /* its shape tensor */
  int flat_output;   /* its output (the FULLY_CONNECTED's input in the file) */
  int aux_checked;   /* zero and byte table evaluated by the delegate (shapeeval.c), not read */
  int sign_input;    /* input is y of SELECT_V2(GREATER_EQUAL(y, 0), 1, -1): the bits are y >= 0 */
  /* Real-valued input, output read only as signs (y >= 0) by the next layer: the sign path
   * (run_sign_path) decides each row from integer sums, see build_sign_path. */
  uint64_t *wmask;   /* per block of 16 rows and group of 4 inputs, the rows' 4 bits each */
  int groups;        /* ceil(k / 4) */
  float *sign_dir, *sign_at; /* per row: y >= 0 exactly when sign_dir * s >= sign_at */
  int conv_op;       /* unpack design into CONV_2D / DEPTHWISE_CONV_2D (bitconv.c), else 0 */
  kbnn_conv conv;    /* its geometry; rows = output channels, k = bits per channel */
};

typedef struct {
  int *count, *consumer, *producer;
  size_t n;
} graph_index;

/* ---- small helpers ---------------------------------------------------------------------- */

static void report(TfLiteContext *ctx, const char *fmt, ...) {
  char message[512];
  va_list args;
  va_start(args, fmt);
  vsnprintf(message, sizeof message, fmt, args);
  va_end(args);
  ctx->ReportError(ctx, "kbnn delegate: %s", message);
}

static TfLiteTensor *tensor_at(TfLiteContext *ctx, int index) {
  if (index < 0 || (size_t)index >= ctx->tensors_size) return NULL;
  return &ctx->tensors[index];
}

/* Number of elements, or -1 if dims are missing, negative or overflow int. */
static long numel(const TfLiteTensor *t) {
  if (!t || !t->dims || t->dims->size < 0 || t->dims->size > 8) return -1;
  long n = 1;
  for (int i = 0; i < t->dims->size; ++i) {
    if (t->dims->data[i] < 0) return -1;
    n *= t->dims->data[i];
    if (n > 0x7fffffffL) return -1;
  }
  return n;
}

static int rank(const TfLiteTensor *t) { return t && t->dims ? t->dims->size : -1; }

static int dim(const TfLiteTensor *t, int i) {
  if (!t || !t->dims || i < 0 || i >= t->dims->size) return -1;
  return t->dims->data[i];
}

static size_t type_size(TfLiteType type) {
  switch (type) {
    case kTfLiteFloat32: case kTfLiteInt32: case kTfLiteUInt32: return 4;
    case kTfLiteUInt8: case kTfLiteInt8: case kTfLiteBool: return 1;
    case kTfLiteInt16: case kTfLiteUInt16: case kTfLiteFloat16: return 2;
    case kTfLiteInt64: case kTfLiteUInt64: case kTfLiteFloat64: return 8;
    default: return 0;
  }
}

/* A constant of `type` whose buffer holds all its elements. */
static int is_const(const TfLiteTensor *t, TfLiteType type) {
  long n = numel(t);
  return t && t->type == type && t->allocation_type == kTfLiteMmapRo && t->data.raw && n >= 0 &&
         t->bytes >= (size_t)n * type_size(type);
}

static int node_op(TfLiteContext *ctx, int index, TfLiteNode **node) {
  TfLiteRegistration *reg = NULL;
  *node = NULL;
  if (ctx->GetNodeAndRegistration(ctx, index, node, &reg) != kTfLiteOk || !*node || !reg)
    return -1;
  if (!(*node)->inputs || !(*node)->outputs) return -1;
  return reg->builtin_code;
}

static int node_input(const TfLiteNode *node, int i) {
  return i < node->inputs->size ? node->inputs->data[i] : -1;
}

static int node_output(const TfLiteNode *node) {
  return node->outputs->size == 1 ? node->outputs->data[0] : -1;
}

/* The only consumer of tensor t if it has exactly one and its op is `op`, else -1. */
static int sole_consumer(TfLiteContext *ctx, const graph_index *g, int t, int op,
                         TfLiteNode **node) {
  if (t < 0 || (size_t)t >= g->n || g->count[t] != 1) return -1;
  int index = g->consumer[t];
  if (node_op(ctx, index, node) != op) return -1;
  return index;
}

static void add_node(kbnn_layer *l, int index) {
  if (l->n_nodes < (int)(sizeof l->nodes / sizeof l->nodes[0])) l->nodes[l->n_nodes++] = index;
  else l->n_nodes = 1 << 20; /* too long: rejected by the caller */
}

static void add_chain(kbnn_layer *l, int index) {
  if (l->n_chain < MAX_CHAIN) l->chain[l->n_chain++] = index;
  else l->n_chain = 1 << 20;
}

#define DECLINE()            \
  do {                       \
    l->declined_at = __LINE__; \
    return 0;                \
  } while (0)

/* ---- matching --------------------------------------------------------------------------- */

/* MUL / ADD by per-channel or scalar constants after the layer, fused activation none. */
static int match_tail(TfLiteContext *ctx, const graph_index *g, kbnn_layer *l, int t) {
  l->n_tail = 0;
  for (;;) {
    if (l->n_tail == MAX_TAIL || t < 0 || (size_t)t >= g->n || g->count[t] != 1) break;
    TfLiteNode *node;
    int index = g->consumer[t];
    int op = node_op(ctx, index, &node);
    if (op != kTfLiteBuiltinMul && op != kTfLiteBuiltinAdd) break;
    if (node->inputs->size != 2 || !node->builtin_data) break;
    int activation = op == kTfLiteBuiltinMul
                         ? ((TfLiteMulParams *)node->builtin_data)->activation
                         : ((TfLiteAddParams *)node->builtin_data)->activation;
    if (activation != kTfLiteActNone) break;
    int other = node_input(node, 0) == t ? node_input(node, 1) : node_input(node, 0);
    if (other == t || (node_input(node, 0) != t && node_input(node, 1) != t)) break;
    TfLiteTensor *c = tensor_at(ctx, other);
    long n = numel(c);
    if (!is_const(c, kTfLiteFloat32) || (n != 1 && n != l->rows)) break;
    if (n == l->rows && n != 1 && (rank(c) < 1 || dim(c, rank(c) - 1) != l->rows)) break;
    if (rank(c) > 2) break;
    int out = node_output(node);
    TfLiteTensor *o = tensor_at(ctx, out);
    if (!o || o->type != kTfLiteFloat32) break;
    l->tail[l->n_tail].op = op == kTfLiteBuiltinMul ? TAIL_MUL : TAIL_ADD;
    l->tail[l->n_tail].count = (int)n;
    l->tail[l->n_tail].values = c->data.f;
    l->n_tail++;
    add_node(l, index);
    t = out;
  }
  return t;
}

static int const_scalar_is(TfLiteContext *ctx, int t, float value) {
  TfLiteTensor *c = tensor_at(ctx, t);
  return is_const(c, kTfLiteFloat32) && numel(c) == 1 && c->data.f[0] == value;
}

static int producer_op(TfLiteContext *ctx, const graph_index *g, int t, TfLiteNode **node) {
  if (t < 0 || (size_t)t >= g->n || g->producer[t] < 0) return -1;
  return node_op(ctx, g->producer[t], node);
}

/* Which byte table the file computes: 0 for levels -1/+1 (2 * bit - 1), 1 for 0/1 (the
 * bits cast to float), -1 for anything else. Invoke checks the values themselves. */
static int table_levels(TfLiteContext *ctx, const graph_index *g, int table) {
  TfLiteNode *node;
  int op = producer_op(ctx, g, table, &node);
  if (op == kTfLiteBuiltinCast) return 1;
  if (op != kTfLiteBuiltinSub || node->inputs->size != 2 || !const_scalar_is(ctx, node_input(node, 1), 1.0f))
    return -1;
  op = producer_op(ctx, g, node_input(node, 0), &node);
  if (op != kTfLiteBuiltinMul || node->inputs->size != 2) return -1;
  int a = node_input(node, 0), b = node_input(node, 1);
  int bits = const_scalar_is(ctx, b, 2.0f) ? a : const_scalar_is(ctx, a, 2.0f) ? b : -1;
  if (bits < 0) return -1;
  return producer_op(ctx, g, bits, &node) == kTfLiteBuiltinCast ? 0 : -1;
}

/* The FULLY_CONNECTED / CONV_2D / DEPTHWISE_CONV_2D node `index` of l (l->rows outputs)
 * reading unpacked weights t: its constant bias (if any), its float output, the tail. */
static int claim_kernel_node(TfLiteContext *ctx, const graph_index *g, int index,
                             TfLiteNode *node, int t, kbnn_layer *l) {
  int bias = node_input(node, 2);
  if (bias >= 0) {
    TfLiteTensor *bt = tensor_at(ctx, bias);
    if (!is_const(bt, kTfLiteFloat32) || numel(bt) != l->rows) DECLINE();
    l->bias = bt->data.f;
  }
  TfLiteTensor *o = tensor_at(ctx, node_output(node));
  if (!o || o->type != kTfLiteFloat32) DECLINE();
  l->anchor = index;
  l->weights = t;
  l->flatten = -1;
  add_node(l, index);
  l->output = match_tail(ctx, g, l, node_output(node));
  return 1;
}

/* The CONV_2D / DEPTHWISE_CONV_2D node `index` reading unpacked weights t (count bits in
 * nw words) as its filter, then the tail: computed by bitconv.c. */
static int match_conv(TfLiteContext *ctx, const graph_index *g, int index, TfLiteNode *node,
                      int op, int t, long count, long nw, kbnn_layer *l) {
  if (node_input(node, 1) != t || node_input(node, 0) == t || node->inputs->size < 2 ||
      node->inputs->size > 3)
    DECLINE();
  TfLiteTensor *in = tensor_at(ctx, node_input(node, 0)), *wt = tensor_at(ctx, t);
  if (!in || in->type != kTfLiteFloat32 || in->allocation_type == kTfLiteMmapRo || rank(in) != 4)
    DECLINE();
  if (!kbnn_conv_read(node, op, wt, dim(in, 3), &l->conv)) DECLINE();
  long k = kbnn_conv_row_bits(&l->conv);
  if ((long)l->conv.out_c * k != count || numel(wt) != count || (count + 31) / 32 != nw)
    DECLINE();
  l->rows = l->conv.out_c;
  l->k = (int)k;
  l->input = node_input(node, 0);
  TfLiteTensor *o = tensor_at(ctx, node_output(node));
  if (rank(o) != 4 || dim(o, 3) != l->rows) DECLINE();
  l->conv_op = op;
  return claim_kernel_node(ctx, g, index, node, t, l);
}

/* The unpack design starting at BITWISE_XOR node `xor_index`. */
static int match_unpack(TfLiteContext *ctx, const graph_index *g, int xor_index, TfLiteNode *x,
                        kbnn_layer *l) {
  memset(l, 0, sizeof *l);
  l->design = DESIGN_UNPACK;
  if (x->inputs->size != 2 || x->outputs->size != 1) DECLINE();
  TfLiteTensor *a = tensor_at(ctx, node_input(x, 0)), *b = tensor_at(ctx, node_input(x, 1));
  if (!a || !b) DECLINE();
  TfLiteTensor *words = is_const(a, kTfLiteInt32) && rank(a) == 1 ? a : b;
  int words_index = words == a ? node_input(x, 0) : node_input(x, 1);
  TfLiteTensor *zero = words == a ? b : a;
  if (!is_const(words, kTfLiteInt32) || rank(words) != 1) DECLINE();
  if (zero->type != kTfLiteInt32 || numel(zero) != 1 || rank(zero) > 1) DECLINE();
  long nw = numel(words);
  if (nw <= 0 || nw > (1L << 26)) DECLINE();
  l->zero = words == a ? node_input(x, 1) : node_input(x, 0);
  l->packed = words->data.i32;
  l->packed_words = (int)nw;
  (void)words_index;
  add_chain(l, xor_index);

  int t = node_output(x);
  TfLiteNode *node;
  int index;
  TfLiteTensor *o;
  /* BITCAST int32 -> uint8 [nw, 4] */
  if ((index = sole_consumer(ctx, g, t, kTfLiteBuiltinBitcast, &node)) < 0) DECLINE();
  t = node_output(node);
  o = tensor_at(ctx, t);
  if (!o || o->type != kTfLiteUInt8 || numel(o) != 4 * nw) DECLINE();
  add_chain(l, index);
  /* RESHAPE to bytes [4 nw] */
  if ((index = sole_consumer(ctx, g, t, kTfLiteBuiltinReshape, &node)) < 0) DECLINE();
  if (node_input(node, 0) != t) DECLINE();
  t = node_output(node);
  o = tensor_at(ctx, t);
  if (!o || o->type != kTfLiteUInt8 || numel(o) != 4 * nw || rank(o) != 1) DECLINE();
  add_chain(l, index);
  /* CAST uint8 -> int32 */
  if ((index = sole_consumer(ctx, g, t, kTfLiteBuiltinCast, &node)) < 0) DECLINE();
  t = node_output(node);
  o = tensor_at(ctx, t);
  if (!o || o->type != kTfLiteInt32 || numel(o) != 4 * nw || rank(o) != 1) DECLINE();
  add_chain(l, index);
  /* GATHER(table, bytes): [4 nw, 8] levels */
  if ((index = sole_consumer(ctx, g, t, kTfLiteBuiltinGather, &node)) < 0) DECLINE();
  if (node->inputs->size != 2 || node_input(node, 1) != t || !node->builtin_data) DECLINE();
  TfLiteGatherParams *gp = (TfLiteGatherParams *)node->builtin_data;
  if (gp->axis != 0 || gp->batch_dims != 0) DECLINE();
  l->table = node_input(node, 0);
  TfLiteTensor *table = tensor_at(ctx, l->table);
  if (!table || table->type != kTfLiteFloat32 || rank(table) != 2 || dim(table, 1) != 8)
    DECLINE();
  if ((l->zero_low = table_levels(ctx, g, l->table)) < 0) DECLINE();
  t = node_output(node);
  o = tensor_at(ctx, t);
  if (!o || o->type != kTfLiteFloat32 || numel(o) != 32 * nw) DECLINE();
  add_chain(l, index);
  /* RESHAPE and prefix STRIDED_SLICE keep the flat bit order. */
  long count = 32 * nw;
  for (int step = 0; step < 6; ++step) {
    if (t < 0 || (size_t)t >= g->n || g->count[t] != 1) DECLINE();
    index = g->consumer[t];
    int op = node_op(ctx, index, &node);
    if (op == kTfLiteBuiltinReshape) {
      if (node_input(node, 0) != t) DECLINE();
      t = node_output(node);
      o = tensor_at(ctx, t);
      if (!o || o->type != kTfLiteFloat32 || numel(o) != count) DECLINE();
      add_chain(l, index);
    } else if (op == kTfLiteBuiltinStridedSlice) {
      TfLiteStridedSliceParams *sp = (TfLiteStridedSliceParams *)node->builtin_data;
      if (!sp || node->inputs->size != 4 || node_input(node, 0) != t) DECLINE();
      if (sp->ellipsis_mask || sp->new_axis_mask || sp->shrink_axis_mask || sp->offset) DECLINE();
      TfLiteTensor *in = tensor_at(ctx, t), *begin = tensor_at(ctx, node_input(node, 1)),
                   *strides = tensor_at(ctx, node_input(node, 3));
      if (rank(in) != 1 || !is_const(begin, kTfLiteInt32) || numel(begin) != 1 ||
          !is_const(strides, kTfLiteInt32) || numel(strides) != 1)
        DECLINE();
      if (strides->data.i32[0] != 1) DECLINE();
      if (!(sp->begin_mask & 1) && begin->data.i32[0] != 0) DECLINE();
      t = node_output(node);
      o = tensor_at(ctx, t);
      long kept = numel(o);
      if (!o || o->type != kTfLiteFloat32 || rank(o) != 1 || kept <= 0 || kept > count) DECLINE();
      /* the end (with its mask) must select exactly what the output holds */
      TfLiteTensor *end = tensor_at(ctx, node_input(node, 2));
      if (!is_const(end, kTfLiteInt32) || numel(end) != 1) DECLINE();
      long stop = (sp->end_mask & 1) ? count : end->data.i32[0];
      if (stop < 0) stop += count;
      if (stop != kept) DECLINE();
      count = kept;
      add_chain(l, index);
    } else if (op == kTfLiteBuiltinFullyConnected) {
      break;
    } else if (op == kTfLiteBuiltinConv2d || op == kTfLiteBuiltinDepthwiseConv2d) {
      return match_conv(ctx, g, index, node, op, t, count, nw, l);
    } else {
      DECLINE();
    }
  }
  /* FULLY_CONNECTED(x, weights [N, K], bias?) */
  if (t < 0 || (size_t)t >= g->n || g->count[t] != 1) DECLINE();
  index = g->consumer[t];
  if (node_op(ctx, index, &node) != kTfLiteBuiltinFullyConnected) DECLINE();
  if (node_input(node, 1) != t || node_input(node, 0) == t || node->inputs->size < 2 ||
      node->inputs->size > 3 || !node->builtin_data)
    DECLINE();
  TfLiteFullyConnectedParams *fp = (TfLiteFullyConnectedParams *)node->builtin_data;
  if (fp->activation != kTfLiteActNone || fp->weights_format != 0) DECLINE();
  TfLiteTensor *wt = tensor_at(ctx, t);
  if (rank(wt) != 2) DECLINE();
  long n = dim(wt, 0), k = dim(wt, 1);
  if (n <= 0 || k <= 0 || n * k != count || (count + 31) / 32 != nw) DECLINE();
  l->rows = (int)n;
  l->k = (int)k;
  l->input = node_input(node, 0);
  TfLiteTensor *in = tensor_at(ctx, l->input);
  if (!in || in->type != kTfLiteFloat32 || rank(in) < 1 || dim(in, rank(in) - 1) != k) DECLINE();
  if (fp->keep_num_dims && rank(in) != 2) DECLINE();
  return claim_kernel_node(ctx, g, index, node, t, l);
}

static int popcount_table_ok(const float *table) {
  for (int i = 0; i < 65536; ++i)
    if (table[i] != (float)__builtin_popcount((unsigned)i)) return 0;
  return 1;
}

/* The xor-popcount design starting at BITWISE_XOR node `xor_index`. */
static int match_xor(TfLiteContext *ctx, const graph_index *g, int xor_index, TfLiteNode *x,
                     kbnn_layer *l) {
  memset(l, 0, sizeof *l);
  l->design = DESIGN_XOR;
  l->zero = l->table = l->weights = -1;
  l->flatten = -1;
  if (x->inputs->size != 2 || x->outputs->size != 1) DECLINE();
  int ia = node_input(x, 0), ib = node_input(x, 1);
  TfLiteTensor *a = tensor_at(ctx, ia), *b = tensor_at(ctx, ib);
  if (!a || !b) DECLINE();
  TfLiteTensor *words = is_const(b, kTfLiteInt32) ? b : a;
  TfLiteTensor *signs = words == b ? a : b;
  if (!is_const(words, kTfLiteInt32) || rank(words) != 2) DECLINE();
  long n = dim(words, 0), w = dim(words, 1);
  if (n <= 0 || w <= 0 || 32 * w >= MAX_POPCOUNT_BITS) DECLINE();
  if (signs->type != kTfLiteInt32 || signs->allocation_type == kTfLiteMmapRo ||
      rank(signs) != 3 || dim(signs, 1) != 1 || dim(signs, 2) != w)
    DECLINE();
  l->input = words == b ? ia : ib;
  l->packed = words->data.i32;
  l->packed_words = (int)(n * w);
  l->rows = (int)n;
  l->in_words32 = (int)w;
  l->k = (int)(32 * w);
  add_node(l, xor_index);
  l->anchor = xor_index;

  int t = node_output(x), index;
  TfLiteNode *node;
  TfLiteTensor *o = tensor_at(ctx, t);
  if (!o || o->type != kTfLiteInt32 || rank(o) != 3 || dim(o, 1) != n || dim(o, 2) != w) DECLINE();
  if ((index = sole_consumer(ctx, g, t, kTfLiteBuiltinBitcast, &node)) < 0) DECLINE();
  t = node_output(node);
  o = tensor_at(ctx, t);
  if (!o || o->type != kTfLiteUInt16 || rank(o) != 4 || dim(o, 1) != n || dim(o, 2) != w ||
      dim(o, 3) != 2)
    DECLINE();
  add_node(l, index);
  if ((index = sole_consumer(ctx, g, t, kTfLiteBuiltinCast, &node)) < 0) DECLINE();
  t = node_output(node);
  o = tensor_at(ctx, t);
  if (!o || o->type != kTfLiteInt32 || rank(o) != 4) DECLINE();
  add_node(l, index);
  if ((index = sole_consumer(ctx, g, t, kTfLiteBuiltinReshape, &node)) < 0) DECLINE();
  if (node_input(node, 0) != t) DECLINE();
  t = node_output(node);
  o = tensor_at(ctx, t);
  if (!o || o->type != kTfLiteInt32 || rank(o) != 3 || dim(o, 1) != n || dim(o, 2) != 2 * w)
    DECLINE();
  add_node(l, index);
  if ((index = sole_consumer(ctx, g, t, kTfLiteBuiltinGather, &node)) < 0) DECLINE();
  if (node->inputs->size != 2 || node_input(node, 1) != t || !node->builtin_data) DECLINE();
  TfLiteGatherParams *gp = (TfLiteGatherParams *)node->builtin_data;
  if (gp->axis != 0 || gp->batch_dims != 0) DECLINE();
  TfLiteTensor *table = tensor_at(ctx, node_input(node, 0));
  if (!is_const(table, kTfLiteFloat32) || numel(table) != 65536 || rank(table) != 1 ||
      !popcount_table_ok(table->data.f))
    DECLINE();
  t = node_output(node);
  add_node(l, index);
  if ((index = sole_consumer(ctx, g, t, kTfLiteBuiltinSum, &node)) < 0) DECLINE();
  if (node->inputs->size != 2 || node_input(node, 0) != t || !node->builtin_data) DECLINE();
  if (((TfLiteReducerParams *)node->builtin_data)->keep_dims) DECLINE();
  TfLiteTensor *axis = tensor_at(ctx, node_input(node, 1));
  if (!is_const(axis, kTfLiteInt32) || numel(axis) != 1) DECLINE();
  if (axis->data.i32[0] != 2 && axis->data.i32[0] != -1) DECLINE();
  t = node_output(node);
  o = tensor_at(ctx, t);
  if (!o || o->type != kTfLiteFloat32 || rank(o) != 2 || dim(o, 1) != n) DECLINE();
  add_node(l, index);
  /* MUL(count, c) */
  if ((index = sole_consumer(ctx, g, t, kTfLiteBuiltinMul, &node)) < 0) DECLINE();
  if (node->inputs->size != 2 || !node->builtin_data ||
      ((TfLiteMulParams *)node->builtin_data)->activation != kTfLiteActNone)
    DECLINE();
  int other = node_input(node, 0) == t ? node_input(node, 1) : node_input(node, 0);
  TfLiteTensor *c = tensor_at(ctx, other);
  if (other == t || !is_const(c, kTfLiteFloat32) || numel(c) != 1) DECLINE();
  l->c_mul = c->data.f[0];
  t = node_output(node);
  add_node(l, index);
  /* SUB(k, .) */
  if ((index = sole_consumer(ctx, g, t, kTfLiteBuiltinSub, &node)) < 0) DECLINE();
  if (node->inputs->size != 2 || node_input(node, 1) != t || !node->builtin_data ||
      ((TfLiteSubParams *)node->builtin_data)->activation != kTfLiteActNone)
    DECLINE();
  c = tensor_at(ctx, node_input(node, 0));
  if (!is_const(c, kTfLiteFloat32) || numel(c) != 1) DECLINE();
  l->c_sub = c->data.f[0];
  o = tensor_at(ctx, node_output(node));
  if (!o || o->type != kTfLiteFloat32) DECLINE();
  add_node(l, index);
  l->output = match_tail(ctx, g, l, node_output(node));
  return 1;
}

/* ---- weights ---------------------------------------------------------------------------- */

static size_t row_words(long bits) {
  size_t words = (size_t)((bits + 63) / 64);
  return (words + KBNN_ROW_WORDS - 1) / KBNN_ROW_WORDS * KBNN_ROW_WORDS;
}

static void *aligned_zeroed(size_t bytes) {
  void *p = NULL;
  if (bytes == 0) bytes = 64;
  bytes = (bytes + 63) / 64 * 64;
  if (posix_memalign(&p, 64, bytes) != 0) return NULL;
  memset(p, 0, bytes);
  return p;
}

/* Copies the file's bits into rows padded to KBNN_ROW_WORDS words. */
static int build_weights(kbnn_layer *l) {
  l->words = row_words(l->k);
  l->w = (uint64_t *)aligned_zeroed((size_t)l->rows * l->words * sizeof(uint64_t));
  l->ones = (int32_t *)calloc((size_t)l->rows, sizeof(int32_t));
  if (!l->w || !l->ones) return 0;
  const uint8_t *src = (const uint8_t *)l->packed;
  size_t src_bytes = (size_t)l->packed_words * 4;
  for (int j = 0; j < l->rows; ++j) {
    uint64_t *row = l->w + (size_t)j * l->words;
    if (l->design == DESIGN_XOR) {
      memcpy(row, src + (size_t)j * l->in_words32 * 4, (size_t)l->in_words32 * 4);
    } else {
      size_t first = (size_t)j * (size_t)l->k;
      for (int i = 0; i < l->k; ++i) { /* depthwise: stored [kh, kw, channels] */
        size_t bit = l->conv.depthwise ? (size_t)i * l->rows + j : first + (size_t)i;
        if ((bit >> 3) >= src_bytes) return 0; /* cannot happen after matching; never read past */
        if ((src[bit >> 3] >> (bit & 7)) & 1) row[i >> 6] |= 1ULL << (i & 63);
      }
    }
    int32_t ones = 0;
    for (size_t i = 0; i < l->words; ++i) ones += __builtin_popcountll(row[i]);
    l->ones[j] = ones;
  }
  if (l->design != DESIGN_UNPACK) return 1;
  l->blocks = (l->rows + 15) / 16;
  l->masks = (uint16_t *)aligned_zeroed((size_t)l->blocks * 16 * (size_t)l->k * sizeof(uint16_t) / 16);
  if (!l->masks) return 0;
  for (int j = 0; j < l->rows; ++j) {
    const uint64_t *row = l->w + (size_t)j * l->words;
    uint16_t *block = l->masks + (size_t)(j / 16) * l->k;
    for (int i = 0; i < l->k; ++i)
      if ((row[i >> 6] >> (i & 63)) & 1) block[i] |= (uint16_t)(1u << (j % 16));
  }
  return 1;
}

static void free_layer(kbnn_layer *l) {
  free(l->w);
  free(l->ones);
  free(l->masks);
  free(l->wmask);
  free(l->sign_dir);
  free(l->sign_at);
  l->wmask = NULL;
  l->sign_dir = l->sign_at = NULL;
  kbnn_conv_release(&l->conv);
  l->w = NULL;
  l->ones = NULL;
  l->masks = NULL;
}

/* ---- the delegate kernel ------------------------------------------------------------------ */

/* One layer as a partition holds it: its unpacking chain, its computation, or both (the
 * runtime's partitioner may put a layer's chain, which needs no run-time input, into an
 * earlier partition than its computation). */
typedef struct {
  kbnn_layer layer;
  int has_chain, has_compute;
  int src;          /* the part of this partition whose output this layer reads, or -1 */
  int internal_out; /* output read only inside the partition: kept in `act`, not a tensor */
  float *act;
  long act_capacity, batch;
} kbnn_part;

typedef struct {
  kbnn_state *state;
  kbnn_part *parts;
  int n_parts;
  int failed;
  kbnn_shape_op *aux_ops; /* shape-only nodes of this partition, plan order */
  int n_aux;
  /* scratch for one input row */
  uint64_t *xbits;
  float *sums;
  size_t max_words;
  int max_rows;
  /* scratch of the sign path: integer sums and undecided rows (max_rows), the input's byte
   * planes (2 x max_groups), ordered masks of undecided blocks (max_rows x max_k / 16) */
  int32_t *isums, *undecided;
  uint32_t *planes;
  uint16_t *block_masks;
  int max_groups, max_k;
} kbnn_partition;

typedef struct {
  const kbnn_kernels *k;
  const kbnn_layer *l;
  const uint64_t *xbits;
  const float *x;
  int binary; /* input row is +-1 */
  float *out;
  float *sums; /* ordered sums, blocks x 16 */
} row_job;

static inline float apply_tail(const kbnn_layer *l, int j, float y) {
  for (int t = 0; t < l->n_tail; ++t) {
    float c = l->tail[t].values[l->tail[t].count == 1 ? 0 : j];
    y = l->tail[t].op == TAIL_MUL ? y * c : y + c;
  }
  return y;
}

#define CHUNK 64
static void run_rows(void *arg, int begin, int end) {
  const row_job *job = (const row_job *)arg;
  const kbnn_layer *l = job->l;
  int32_t counts[CHUNK];
  for (int j0 = begin; j0 < end; j0 += CHUNK) {
    int n = end - j0 < CHUNK ? end - j0 : CHUNK;
    const uint64_t *w = l->w + (size_t)j0 * l->words;
    if (l->design == DESIGN_XOR) {
      job->k->xor_popcount(job->xbits, w, l->words, (size_t)n, counts);
      for (int j = 0; j < n; ++j) {
        float y = l->c_sub - (float)counts[j] * l->c_mul;
        job->out[j0 + j] = apply_tail(l, j0 + j, y);
      }
      continue;
    }
    if (!l->zero_low)
      job->k->xor_popcount(job->xbits, w, l->words, (size_t)n, counts);
    else
      job->k->and_popcount(job->xbits, w, l->words, (size_t)n, counts);
    for (int j = 0; j < n; ++j) {
      int r = j0 + j;
      /* +-1 weights: agreements - disagreements; 0/1 weights: the sum of x over ones */
      float y = (float)(!l->zero_low ? l->k - 2 * counts[j] : 2 * counts[j] - l->ones[r]);
      if (l->bias) y = y + l->bias[r];
      job->out[r] = apply_tail(l, r, y);
    }
  }
}

/* Real-valued inputs: blocks of 16 rows summed in input order (see ordered_sum). */
static void run_blocks(void *arg, int begin, int end) {
  const row_job *job = (const row_job *)arg;
  const kbnn_layer *l = job->l;
  job->k->ordered_sum(job->x, l->masks + (size_t)begin * l->k, (size_t)l->k,
                      (size_t)(end - begin), l->zero_low, job->sums + (size_t)begin * 16);
  int last = end * 16 < l->rows ? end * 16 : l->rows;
  for (int r = begin * 16; r < last; ++r) {
    float y = job->sums[r];
    if (l->bias) y = y + l->bias[r];
    job->out[r] = apply_tail(l, r, y);
  }
}

/* ---- real-valued inputs whose outputs only meet a sign ------------------------------------
 *
 * A first layer's float sum costs one vector add per 16 (row, input) pairs, the add unit's
 * limit. When the next layer reads the output only as y >= 0, the delegate needs the sign,
 * not the value: it sums the input, quantized to 16-bit integers, over each row's set bits
 * (integer dot products, several times faster), bounds how far the stock float32 sum in input
 * order can be from that (kbnn_quantized), and keeps each row whose whole interval lies on
 * one side of the row's threshold. A row whose interval straddles it (about 1 in 2000 on
 * Fashion-MNIST) is summed in input order as before. The signs are those of the stock
 * runtime; the values the next layer never reads are written as +-1. */

/* y >= 0 for the layer's sum s in row r, with the file's float operations in its order. */
static int sign_of(const kbnn_layer *l, int r, float s) {
  float y = s;
  if (l->bias) y = y + l->bias[r];
  return apply_tail(l, r, y) >= 0.0f;
}

/* Floats in order as integers (-0 just below +0), and back. */
static int64_t float_key(float f) {
  uint32_t b;
  memcpy(&b, &f, sizeof b);
  return (b >> 31) ? -(int64_t)(b & 0x7fffffffu) - 1 : (int64_t)b;
}

static float key_float(int64_t key) {
  uint32_t b = key >= 0 ? (uint32_t)key : ((uint32_t)(-(key + 1)) | 0x80000000u);
  float f;
  memcpy(&f, &b, sizeof f);
  return f;
}

#define SIGN_PARALLEL_WORK (1L << 21) /* weights of a sign-path layer worth splitting */
#define SIGN_LIMIT 0x1p60f /* |s| the thresholds hold for; kbnn_quantized rows stay below 2^41 */

/* Per row, the threshold of y >= 0 as a function of s: bias and tail add and multiply by
 * finite constants, each a monotone function of its input while nothing overflows (checked
 * for |s| <= SIGN_LIMIT), so y >= 0 holds on one side of a float, found by bisection over
 * the floats. Also lays out the weights for masked_sum_u16. 0 if a row's constants could
 * overflow (the layer then keeps ordered_sum). */
static int build_sign_path(kbnn_layer *l) {
  if (l->k < 1 || l->k > 16384) return 0; /* int32 sums of 16-bit values stay exact */
  for (int r = 0; r < l->rows; ++r) {
    double bound = SIGN_LIMIT + (l->bias ? (l->bias[r] < 0 ? -l->bias[r] : l->bias[r]) : 0.0);
    for (int t = 0; t < l->n_tail; ++t) {
      double c = l->tail[t].values[l->tail[t].count == 1 ? 0 : r];
      c = c < 0 ? -c : c;
      if (!(c <= (double)SIGN_LIMIT)) return 0; /* also NaN */
      bound = l->tail[t].op == TAIL_MUL ? bound * c : bound + c;
      if (!(bound < 0x1p120)) return 0;
    }
    if (!(bound < 0x1p120)) return 0; /* a NaN bias */
  }
  l->groups = (l->k + 3) / 4;
  l->sign_dir = (float *)malloc((size_t)l->rows * sizeof(float));
  l->sign_at = (float *)malloc((size_t)l->rows * sizeof(float));
  l->wmask = (uint64_t *)aligned_zeroed((size_t)l->blocks * l->groups * sizeof(uint64_t));
  if (!l->sign_dir || !l->sign_at || !l->wmask) return 0;
  for (int r = 0; r < l->rows; ++r) {
    int below = sign_of(l, r, -SIGN_LIMIT), above = sign_of(l, r, SIGN_LIMIT);
    if (sign_of(l, r, -0.0f) != sign_of(l, r, 0.0f)) return 0;
    int64_t a = float_key(-SIGN_LIMIT), b = float_key(SIGN_LIMIT);
    if (below == above) { /* the same sign for every s */
      l->sign_dir[r] = 1.0f;
      l->sign_at[r] = below ? -INFINITY : INFINITY;
      continue;
    }
    while (b - a > 1) { /* sign_of(a) == below, sign_of(b) == above */
      int64_t mid = a + (b - a) / 2;
      if (sign_of(l, r, key_float(mid)) == above) b = mid;
      else a = mid;
    }
    l->sign_dir[r] = above ? 1.0f : -1.0f; /* y >= 0 iff s >= at, or iff s <= the last true */
    l->sign_at[r] = above ? key_float(b) : -key_float(a);
  }
  for (int j = 0; j < l->rows; ++j) {
    const uint64_t *row = l->w + (size_t)j * l->words;
    uint64_t *block = l->wmask + (size_t)(j / 16) * l->groups;
    for (int i = 0; i < l->k; ++i)
      if ((row[i >> 6] >> (i & 63)) & 1) block[i / 4] |= 1ULL << (4 * (j % 16) + i % 4);
  }
  return 1;
}

typedef struct {
  const kbnn_kernels *k;
  const kbnn_layer *l;
  const float *x;
  kbnn_partition *p;
  kbnn_sign_rule rule;
  float *out;
} sign_job;

static void run_sign_blocks(void *arg, int begin, int end) {
  const sign_job *job = (const sign_job *)arg;
  const kbnn_layer *l = job->l;
  kbnn_partition *p = job->p;
  int r0 = begin * 16, r1 = end * 16 < l->rows ? end * 16 : l->rows;
  const uint32_t *lo = p->planes, *hi = p->planes + p->max_groups;
  job->k->masked_sum_u16(lo, hi, l->wmask + (size_t)begin * l->groups, (size_t)l->groups,
                         (size_t)(end - begin), p->isums + r0);
  int32_t *undecided = p->undecided + r0;
  size_t n = job->k->decide_signs(p->isums + r0, l->ones + r0, l->sign_dir + r0,
                                  l->sign_at + r0, (size_t)(r1 - r0), &job->rule,
                                  job->out + r0, undecided);
  if (n == 0) return;
  /* Sum the blocks of the undecided rows in input order (rows come in ascending order). */
  uint16_t *masks = p->block_masks + (size_t)begin * l->k;
  float *sums = p->sums + r0;
  int blocks = 0, last = -1;
  for (size_t u = 0; u < n; ++u) {
    int block = (r0 + undecided[u]) / 16;
    if (block == last) continue;
    memcpy(masks + (size_t)blocks * l->k, l->masks + (size_t)block * l->k,
           (size_t)l->k * sizeof(uint16_t));
    blocks++;
    last = block;
  }
  job->k->ordered_sum(job->x, masks, (size_t)l->k, (size_t)blocks, l->zero_low, sums);
  blocks = 0;
  last = -1;
  for (size_t u = 0; u < n; ++u) {
    int r = r0 + undecided[u];
    if (r / 16 != last) {
      blocks++;
      last = r / 16;
    }
    float y = sums[(blocks - 1) * 16 + r % 16];
    if (l->bias) y = y + l->bias[r];
    job->out[r] = apply_tail(l, r, y);
  }
}

/* One input row through the sign path; 0 if quantize_u16 declines it (non-finite values,
 * extreme ranges), and the caller sums it in input order. */
static int run_sign_path(kbnn_partition *p, const kbnn_layer *l, const float *x, float *out,
                         kbnn_pool *pool) {
  const kbnn_kernels *k = &p->state->kernels;
  kbnn_quantized q;
  if (!k->quantize_u16(x, (size_t)l->k, p->planes, p->planes + p->max_groups, &q)) return 0;
  sign_job job;
  job.k = k;
  job.l = l;
  job.x = x;
  job.p = p;
  job.out = out;
  job.rule = kbnn_sign_rule_for(&q, (size_t)l->k, l->zero_low);
  /* About 130 weights per nanosecond: a 784 x 1024 layer takes less time than waking a
   * sleeping worker (measured: 8 us alone, 23 us split over two threads). */
  if ((long)l->rows * l->k < SIGN_PARALLEL_WORK) pool = NULL;
  kbnn_pool_run(pool, run_sign_blocks, &job, l->blocks, 4);
  return 1;
}

static int contains(const TfLiteIntArray *a, int v) {
  for (int i = 0; i < a->size; ++i)
    if (a->data[i] == v) return 1;
  return 0;
}

/* 1 if all of nodes are in `set`, 0 if none is, -1 if some are. */
static int all_or_none(const TfLiteIntArray *set, const int *nodes, int n) {
  int inside = 0;
  for (int i = 0; i < n; ++i) inside += contains(set, nodes[i]);
  return inside == n ? (n > 0) : inside == 0 ? 0 : -1;
}

static void *kernel_init(TfLiteContext *ctx, const char *buffer, size_t length) {
  (void)length;
  const TfLiteDelegateParams *params = (const TfLiteDelegateParams *)buffer;
  kbnn_partition *p = (kbnn_partition *)calloc(1, sizeof(kbnn_partition));
  if (!p) return NULL;
  kbnn_state *s = (kbnn_state *)params->delegate->data_;
  p->state = s;
  p->parts = (kbnn_part *)calloc((size_t)s->n_pending + 1, sizeof(kbnn_part));
  if (!p->parts) {
    p->failed = 1;
    return p;
  }
  const TfLiteIntArray *nodes = params->nodes_to_replace;
  int covered = 0;
  for (int i = 0; i < s->n_pending; ++i) {
    const kbnn_layer *l = &s->pending[i];
    int chain = all_or_none(nodes, l->chain, l->n_chain);
    int compute = all_or_none(nodes, l->nodes, l->n_nodes);
    if (chain < 0 || compute < 0) {
      report(ctx, "a partition splits the layer at node %d", l->anchor);
      p->failed = 1;
      return p;
    }
    if (!chain && !compute) continue;
    kbnn_part *part = &p->parts[p->n_parts++];
    part->layer = *l;
    part->has_chain = chain;
    part->has_compute = compute;
    covered += (chain ? l->n_chain : 0) + (compute ? l->n_nodes : 0);
    if (!compute) continue;
    if (!build_weights(&part->layer)) {
      report(ctx, "out of memory unpacking the weights of %d x %d", l->rows, l->k);
      p->failed = 1;
      return p;
    }
    if (part->layer.words > p->max_words) p->max_words = part->layer.words;
    if (part->layer.blocks * 16 > p->max_rows) p->max_rows = part->layer.blocks * 16;
    s->claimed++;
  }
  p->aux_ops = (kbnn_shape_op *)calloc((size_t)s->n_pending_aux + 1, sizeof(kbnn_shape_op));
  if (!p->aux_ops) {
    p->failed = 1;
    return p;
  }
  for (int i = 0; i < s->n_pending_aux; ++i)
    if (contains(nodes, s->pending_aux[i])) p->aux_ops[p->n_aux++] = s->pending_aux_ops[i];
  covered += p->n_aux;
  /* Run the layers in the file's order (a node's index follows its inputs'), each reading
   * the layer before it in this partition directly where the file connects them. */
  for (int i = 1; i < p->n_parts; ++i)
    for (int j = i; j > 0 && p->parts[j].layer.anchor < p->parts[j - 1].layer.anchor; --j) {
      kbnn_part swap = p->parts[j];
      p->parts[j] = p->parts[j - 1];
      p->parts[j - 1] = swap;
    }
  for (int i = 0; i < p->n_parts; ++i) {
    kbnn_part *part = &p->parts[i];
    part->src = -1;
    if (!part->has_compute) continue;
    part->internal_out = !contains(params->output_tensors, part->layer.output);
    for (int j = 0; j < i; ++j)
      if (p->parts[j].has_compute && p->parts[j].layer.output == part->layer.input) part->src = j;
    if (part->src < 0 && !contains(params->input_tensors, part->layer.input)) {
      report(ctx, "the input of the layer at node %d is made outside its partition's order",
             part->layer.anchor);
      p->failed = 1;
      return p;
    }
  }
  if (covered != nodes->size) {
    report(ctx, "a partition of %d nodes holds %d nodes of recognised layers", nodes->size,
           covered);
    p->failed = 1;
    return p;
  }
  /* The sign path for real-valued dense layers whose every reader in the partition takes
   * only signs (the output is no tensor, so nothing else reads it). */
  for (int i = 0; s->kernels.masked_sum_u16 && i < p->n_parts; ++i) {
    kbnn_layer *l = &p->parts[i].layer;
    if (!p->parts[i].has_compute || l->design != DESIGN_UNPACK || l->conv_op ||
        !p->parts[i].internal_out)
      continue;
    int readers = 0, signs = 0;
    for (int j = i + 1; j < p->n_parts; ++j)
      if (p->parts[j].src == i) {
        readers++;
        signs += p->parts[j].layer.sign_input;
      }
    if (readers == 0 || signs != readers) continue;
    if (!build_sign_path(l)) {
      free(l->wmask);
      free(l->sign_dir);
      free(l->sign_at);
      l->wmask = NULL;
      l->sign_dir = l->sign_at = NULL;
      continue;
    }
    if (l->groups > p->max_groups) p->max_groups = l->groups;
    if (l->k > p->max_k) p->max_k = l->k;
    if (s->options.verbose)
      fprintf(stderr, "kbnn delegate: node %d: real-valued input, output read as signs: "
              "sign path (%s)\n", l->anchor, s->kernels.name);
  }
  p->xbits = (uint64_t *)aligned_zeroed(p->max_words * sizeof(uint64_t));
  p->sums = (float *)aligned_zeroed((size_t)p->max_rows * sizeof(float));
  if (!p->xbits || !p->sums) p->failed = 1;
  if (p->max_groups > 0) {
    p->isums = (int32_t *)aligned_zeroed((size_t)p->max_rows * sizeof(int32_t));
    p->undecided = (int32_t *)aligned_zeroed((size_t)p->max_rows * sizeof(int32_t));
    p->planes = (uint32_t *)aligned_zeroed((size_t)p->max_groups * 2 * sizeof(uint32_t));
    p->block_masks = (uint16_t *)aligned_zeroed((size_t)p->max_rows / 16 * (size_t)p->max_k *
                                                sizeof(uint16_t));
    if (!p->isums || !p->undecided || !p->planes || !p->block_masks) p->failed = 1;
  }
  return p;
}

static void kernel_free(TfLiteContext *ctx, void *buffer) {
  (void)ctx;
  kbnn_partition *p = (kbnn_partition *)buffer;
  if (!p) return;
  for (int i = 0; i < p->n_parts; ++i) {
    free_layer(&p->parts[i].layer);
    free(p->parts[i].act);
  }
  free(p->parts);
  free(p->aux_ops);
  free(p->xbits);
  free(p->sums);
  free(p->isums);
  free(p->undecided);
  free(p->planes);
  free(p->block_masks);
  free(p);
}

static long layer_batch(TfLiteContext *ctx, const kbnn_layer *l) {
  TfLiteTensor *in = tensor_at(ctx, l->input);
  long n = numel(in);
  long per_row = l->design == DESIGN_XOR ? l->in_words32 : l->k;
  if (n < 0 || per_row <= 0 || n % per_row) return -1;
  return n / per_row;
}

static TfLiteStatus resize(TfLiteContext *ctx, TfLiteTensor *t, int rank_, const int *shape) {
  if (ctx->ResizeTensorExplicit) return ctx->ResizeTensorExplicit(ctx, t, rank_, shape);
  TfLiteIntArray *a = (TfLiteIntArray *)malloc(sizeof(TfLiteIntArray) + sizeof(int) * rank_);
  if (!a) return kTfLiteError;
  a->size = rank_;
  for (int i = 0; i < rank_; ++i) a->data[i] = shape[i];
  return ctx->ResizeTensor(ctx, t, a); /* takes ownership */
}

static int partition_aux_ok(TfLiteContext *ctx, const kbnn_state *s, const kbnn_shape_op *aux,
                            int n_aux, const kbnn_part *parts, int n_parts);

/* Output values per item of the batch: rows, or a conv's out_h x out_w x rows. */
static long part_items(const kbnn_layer *l) {
  return l->conv_op ? (long)l->conv.out_h * l->conv.out_w * l->rows : l->rows;
}

static float *part_output(TfLiteContext *ctx, const kbnn_part *part);

/* A conv layer's sizes for its input (a tensor, or the conv before it in the partition),
 * its padding tables, and its output's shape or buffer. */
static TfLiteStatus prepare_conv_part(TfLiteContext *ctx, kbnn_partition *p, kbnn_part *part) {
  kbnn_layer *l = &part->layer;
  long batch = -1;
  int h = 0, w = 0, c = 0;
  if (part->src >= 0 && p->parts[part->src].layer.conv_op) {
    const kbnn_part *src = &p->parts[part->src];
    batch = src->batch;
    h = src->layer.conv.out_h;
    w = src->layer.conv.out_w;
    c = src->layer.rows;
  } else if (part->src < 0) {
    TfLiteTensor *in = tensor_at(ctx, l->input);
    if (rank(in) == 4) {
      batch = dim(in, 0);
      h = dim(in, 1);
      w = dim(in, 2);
      c = dim(in, 3);
    }
  }
  if (batch < 0 || c != l->conv.in_c ||
      !kbnn_conv_prepare(&l->conv, h, w, l->w, l->words, l->zero_low,
                         p->state->options.max_kernel_level)) {
    report(ctx, "the %dx%d conv at node %d cannot take a %ld x %d x %d x %d input", l->conv.kh,
           l->conv.kw, l->anchor, batch, h, w, c);
    return kTfLiteError;
  }
  part->batch = batch;
  long items = part_items(l);
  if (part->internal_out) {
    if (batch * items > part->act_capacity) {
      free(part->act);
      part->act = (float *)aligned_zeroed((size_t)(batch * items) * sizeof(float));
      part->act_capacity = part->act ? batch * items : 0;
      if (!part->act) return kTfLiteError;
    }
    return kTfLiteOk;
  }
  TfLiteTensor *out = tensor_at(ctx, l->output);
  int shape[4] = {(int)batch, l->conv.out_h, l->conv.out_w, l->rows};
  if (!out) return kTfLiteError;
  if (rank(out) == 4 && dim(out, 0) == shape[0] && dim(out, 1) == shape[1] &&
      dim(out, 2) == shape[2] && dim(out, 3) == shape[3])
    return kTfLiteOk;
  return resize(ctx, out, 4, shape);
}

/* A conv layer: bitconv.c's dot products, then the bias, the fused activation and the
 * tail per channel (MAX_TAIL + 2 <= KBNN_CONV_MAX_STEPS). */
static TfLiteStatus run_conv_part(TfLiteContext *ctx, kbnn_partition *p, const kbnn_part *part) {
  const kbnn_layer *l = &part->layer;
  long batch = part->batch, items = part_items(l);
  long in_items = (long)l->conv.in_h * l->conv.in_w * l->conv.in_c;
  float *out = part_output(ctx, part);
  const float *in = NULL;
  if (part->src >= 0) {
    in = part_output(ctx, &p->parts[part->src]);
  } else {
    TfLiteTensor *t = tensor_at(ctx, l->input);
    if (t && t->type == kTfLiteFloat32 && numel(t) == batch * in_items &&
        t->bytes >= (size_t)numel(t) * 4)
      in = t->data.f;
  }
  if (batch < 0 || (batch > 0 && (!in || !out)) ||
      (part->internal_out && batch * items > part->act_capacity)) {
    report(ctx, "tensors %d -> %d of the conv at node %d changed shape since prepare", l->input,
           l->output, l->anchor);
    return kTfLiteError;
  }
  kbnn_conv_weights cw = {&l->conv, &p->state->kernels, l->w, l->words, l->ones,
                          l->zero_low, l->masks, l->blocks, NULL, 0, {{0}}};
  /* A zero bias is left out: the dot products are never -0, so adding 0 changes nothing.
   * Depthwise sums start from the bias, as the stock kernel's do. */
  if (l->conv.depthwise) cw.start = l->bias;
  int zero_bias = 1;
  for (int r = 0; l->bias && r < l->rows; ++r) zero_bias &= l->bias[r] == 0.0f;
  if (!zero_bias && !l->conv.depthwise) cw.steps[cw.n_steps++] = (kbnn_conv_step){KBNN_STEP_ADD, l->rows, l->bias};
  cw.n_steps += kbnn_conv_activation_step(&l->conv, &cw.steps[cw.n_steps]);
  for (int t = 0; t < l->n_tail && cw.n_steps < KBNN_CONV_MAX_STEPS; ++t)
    cw.steps[cw.n_steps++] = (kbnn_conv_step){
        l->tail[t].op == TAIL_MUL ? KBNN_STEP_MUL : KBNN_STEP_ADD, l->tail[t].count,
        l->tail[t].values};
  for (long b = 0; b < batch; ++b)
    if (kbnn_conv_image(&cw, p->state->pool, in + b * in_items,
                        l->sign_input ? KBNN_CONV_SIGN : KBNN_CONV_AUTO, out + b * items) != 0) {
      report(ctx, "out of memory in the conv at node %d", l->anchor);
      return kTfLiteError;
    }
  return kTfLiteOk;
}

static TfLiteStatus kernel_prepare(TfLiteContext *ctx, TfLiteNode *node) {
  kbnn_partition *p = (kbnn_partition *)node->user_data;
  if (!p || p->failed) {
    report(ctx, "the delegate kernel could not be initialised (see the messages above)");
    return kTfLiteError;
  }
  if (!partition_aux_ok(ctx, p->state, p->aux_ops, p->n_aux, p->parts, p->n_parts)) {
    report(ctx, "the zero, byte table or flatten shape that the file computes from the input's "
           "shape is not what kbnn layout %d says", KBNN_LAYOUT_VERSION);
    return kTfLiteError;
  }
  for (int i = 0; i < p->n_parts; ++i) {
    const kbnn_layer *l = &p->parts[i].layer;
    if (p->parts[i].has_chain && !p->parts[i].has_compute) {
      /* The unpacked weights only order this partition before the layer's computation,
       * which reads the packed words: they need no memory. */
      int empty[1] = {0};
      TfLiteTensor *w = tensor_at(ctx, l->weights);
      if (!w || (numel(w) != 0 && resize(ctx, w, 1, empty) != kTfLiteOk)) return kTfLiteError;
    }
    if (!p->parts[i].has_compute) continue;
    kbnn_part *part = &p->parts[i];
    if (l->conv_op) {
      if (prepare_conv_part(ctx, p, part) != kTfLiteOk) return kTfLiteError;
      continue;
    }
    long batch = part->src >= 0 ? p->parts[part->src].batch : layer_batch(ctx, l);
    if (part->src >= 0 && part_items(&p->parts[part->src].layer) != l->k) batch = -1;
    TfLiteTensor *in = tensor_at(ctx, l->input), *out = tensor_at(ctx, l->output);
    part->batch = batch;
    if (batch >= 0 && part->internal_out) {
      if (batch * l->rows > part->act_capacity) {
        free(part->act);
        part->act = (float *)aligned_zeroed((size_t)(batch * l->rows) * sizeof(float));
        part->act_capacity = part->act ? batch * l->rows : 0;
        if (!part->act) return kTfLiteError;
      }
      continue;
    }
    if (batch < 0 || !in || !out) {
      report(ctx, "input tensor %d holds %ld values, not a multiple of %d", l->input,
             numel(in), l->design == DESIGN_XOR ? l->in_words32 : l->k);
      return kTfLiteError;
    }
    int shape[2] = {(int)batch, l->rows};
    if (rank(out) == 2 && dim(out, 0) == shape[0] && dim(out, 1) == shape[1]) continue;
    if (resize(ctx, out, 2, shape) != kTfLiteOk) return kTfLiteError;
  }
  return kTfLiteOk;
}

/* The zero and byte table the file computes at run time must be what layout 1 says. */
static TfLiteStatus check_unpack_inputs(TfLiteContext *ctx, const kbnn_state *s,
                                        const kbnn_layer *l) {
  TfLiteTensor *zero = tensor_at(ctx, l->zero), *table = tensor_at(ctx, l->table);
  if (!zero || zero->type != kTfLiteInt32 || numel(zero) != 1 || !zero->data.raw ||
      zero->data.i32[0] != 0) {
    report(ctx, "the zero that unpacks tensor %d's words is not 0; this is not a kbnn "
           "layout-%d file", l->zero, KBNN_LAYOUT_VERSION);
    return kTfLiteError;
  }
  const float *expected = l->zero_low ? s->table_01 : s->table_pm1;
  if (!table || table->type != kTfLiteFloat32 || numel(table) != 2048 || !table->data.raw ||
      table->bytes < sizeof s->table_01 ||
      memcmp(table->data.f, expected, sizeof s->table_01) != 0) {
    report(ctx, "byte table tensor %d does not hold the %s levels of kbnn layout %d", l->table,
           l->zero_low ? "0/1" : "-1/+1", KBNN_LAYOUT_VERSION);
    return kTfLiteError;
  }
  return kTfLiteOk;
}

/* Where a part's output lives: its tensor, or the partition's buffer when only the
 * partition reads it. */
static float *part_output(TfLiteContext *ctx, const kbnn_part *part);
static float *part_output(TfLiteContext *ctx, const kbnn_part *part) {
  if (part->internal_out) return part->act;
  TfLiteTensor *out = tensor_at(ctx, part->layer.output);
  if (!out || out->type != kTfLiteFloat32 || numel(out) != part->batch * part_items(&part->layer) ||
      out->bytes < (size_t)numel(out) * 4)
    return NULL;
  return out->data.f;
}

static TfLiteStatus run_layer(TfLiteContext *ctx, kbnn_partition *p, const kbnn_part *part) {
  kbnn_state *s = p->state;
  const kbnn_layer *l = &part->layer;
  long batch = part->batch;
  const float *in_f = NULL;
  const int32_t *in_i = NULL;
  float *out_f = part_output(ctx, part);
  if (part->src >= 0) {
    in_f = part_output(ctx, &p->parts[part->src]);
  } else {
    TfLiteTensor *in = tensor_at(ctx, l->input);
    long per_row = l->design == DESIGN_XOR ? l->in_words32 : l->k;
    if (in && numel(in) == batch * per_row && in->bytes >= (size_t)numel(in) * 4) {
      in_f = in->data.f;
      in_i = in->data.i32;
    }
  }
  if (batch < 0 || (batch > 0 && ((l->design == DESIGN_XOR ? !in_i : !in_f) || !out_f)) ||
      (part->internal_out && batch * l->rows > part->act_capacity)) {
    report(ctx, "tensors %d -> %d of a %d x %d layer changed shape since prepare", l->input,
           l->output, l->rows, l->k);
    return kTfLiteError;
  }
  /* Waking a thread costs microseconds: split only layers worth more than that. */
  kbnn_pool *pool = (long)l->rows * l->k >= MIN_PARALLEL_WORK ? s->pool : NULL;
  row_job job;
  memset(&job, 0, sizeof job);
  job.k = &s->kernels;
  job.l = l;
  job.xbits = p->xbits;
  job.sums = p->sums;
  memset(p->xbits, 0, l->words * sizeof(uint64_t));
  for (long b = 0; b < batch; ++b) {
    job.out = out_f + b * l->rows;
    if (l->design == DESIGN_XOR) {
      memcpy(p->xbits, in_i + b * l->in_words32, (size_t)l->in_words32 * 4);
    } else if (l->sign_input) {
      const float *y = in_f + b * l->k;
      s->kernels.pack_signs(y, (size_t)l->k, p->xbits, l->words);
      job.binary = 1;
    } else {
      const float *x = in_f + b * l->k;
      const uint32_t *xb = (const uint32_t *)x;
      int binary = 1;
      for (int k = 0; k < l->k; ++k)
        if ((xb[k] & 0x7fffffffu) != 0x3f800000u) { /* not +1 or -1 */
          binary = 0;
          break;
        }
      job.binary = binary;
      job.x = x;
      if (!binary) {
        if (!l->sign_at || !run_sign_path(p, l, x, job.out, pool))
          kbnn_pool_run(pool, run_blocks, &job, l->blocks, 4);
        continue;
      }
      memset(p->xbits, 0, l->words * sizeof(uint64_t));
      for (int k = 0; k < l->k; ++k)
        p->xbits[k >> 6] |= (uint64_t)((xb[k] >> 31) ^ 1u) << (k & 63);
    }
    kbnn_pool_run(pool, run_rows, &job, l->rows, CHUNK);
  }
  return kTfLiteOk;
}

static TfLiteStatus kernel_invoke(TfLiteContext *ctx, TfLiteNode *node) {
  kbnn_partition *p = (kbnn_partition *)node->user_data;
  if (!p || p->failed) return kTfLiteError;
  for (int i = 0; i < p->n_parts; ++i) {
    const kbnn_layer *l = &p->parts[i].layer;
    if (p->parts[i].has_chain && !l->aux_checked &&
        check_unpack_inputs(ctx, p->state, l) != kTfLiteOk)
      return kTfLiteError;
    if (p->parts[i].has_compute &&
        (l->conv_op ? run_conv_part(ctx, p, &p->parts[i]) : run_layer(ctx, p, &p->parts[i])) !=
            kTfLiteOk)
      return kTfLiteError;
  }
  return kTfLiteOk;
}

/* ---- the delegate ------------------------------------------------------------------------- */

static int build_index(TfLiteContext *ctx, const TfLiteIntArray *plan, graph_index *g) {
  g->n = ctx->tensors_size;
  g->count = (int *)calloc(g->n + 1, sizeof(int));
  g->consumer = (int *)calloc(g->n + 1, sizeof(int));
  g->producer = (int *)malloc((g->n + 1) * sizeof(int));
  if (!g->count || !g->consumer || !g->producer) return 0;
  for (size_t t = 0; t <= g->n; ++t) g->producer[t] = -1;
  for (int i = 0; i < plan->size; ++i) {
    TfLiteNode *node;
    if (node_op(ctx, plan->data[i], &node) < 0) continue;
    for (int k = 0; k < node->inputs->size; ++k) {
      int t = node->inputs->data[k];
      if (t < 0 || (size_t)t >= g->n) continue;
      g->count[t]++;
      g->consumer[t] = plan->data[i];
    }
    for (int k = 0; k < node->outputs->size; ++k) {
      int t = node->outputs->data[k];
      if (t >= 0 && (size_t)t < g->n) g->producer[t] = plan->data[i];
    }
  }
  return 1;
}

/* Whether a previewed partition holds whole chains and whole computations of layers, whose
 * inputs come from outside it and whose outputs are all its outputs. */
static int partition_ok(TfLiteContext *ctx, const TfLiteDelegateParams *part,
                        const kbnn_layer *layers, int n, const int *aux, int n_aux) {
  int covered = 0;
  const TfLiteIntArray *nodes = part->nodes_to_replace;
  /* Shape-only nodes write nothing: their outputs must stay inside their partition. */
  for (int i = 0; i < n_aux; ++i) {
    if (!contains(nodes, aux[i])) continue;
    TfLiteNode *node;
    if (node_op(ctx, aux[i], &node) < 0 || contains(part->output_tensors, node_output(node)))
      return 0;
    covered++;
  }
  for (int i = 0; i < n; ++i) {
    const kbnn_layer *l = &layers[i];
    int chain = all_or_none(nodes, l->chain, l->n_chain);
    int compute = all_or_none(nodes, l->nodes, l->n_nodes);
    if (chain < 0 || compute < 0) return 0;
    covered += (chain ? l->n_chain : 0) + (compute ? l->n_nodes : 0);
    if (chain && !l->aux_checked) {
      if (!contains(part->input_tensors, l->zero) || !contains(part->input_tensors, l->table))
        return 0;
    }
    if (chain) {
      if (!compute && !contains(part->output_tensors, l->weights)) return 0;
    }
    if (compute) {
      int in_ok = contains(part->input_tensors, l->input), out_ok =
          contains(part->output_tensors, l->output);
      for (int j = 0; j < n; ++j) { /* or made / read by another layer of this partition */
        if (j == i || all_or_none(nodes, layers[j].nodes, layers[j].n_nodes) != 1) continue;
        in_ok |= layers[j].output == l->input;
        out_ok |= layers[j].input == l->output;
      }
      if (!in_ok || !out_ok) return 0;
      if (l->n_chain && !chain && !contains(part->input_tensors, l->weights)) return 0;
    }
  }
  if (covered != nodes->size) return 0;
  for (int o = 0; o < part->output_tensors->size; ++o) {
    int t = part->output_tensors->data[o], expected = 0;
    for (int i = 0; i < n; ++i) {
      if (layers[i].output == t && all_or_none(nodes, layers[i].nodes, layers[i].n_nodes) == 1)
        expected = 1;
      if (layers[i].weights == t && all_or_none(nodes, layers[i].chain, layers[i].n_chain) == 1)
        expected = 1;
    }
    if (!expected) return 0;
  }
  return 1;
}

static TfLiteIntArray *node_list(const kbnn_layer *layers, int n) {
  int total = 0;
  for (int i = 0; i < n; ++i) total += layers[i].n_chain + layers[i].n_nodes;
  TfLiteIntArray *a = (TfLiteIntArray *)malloc(sizeof(TfLiteIntArray) + sizeof(int) * (total + 1));
  if (!a) return NULL;
  a->size = 0;
  for (int i = 0; i < n; ++i) {
    for (int k = 0; k < layers[i].n_chain; ++k) a->data[a->size++] = layers[i].chain[k];
    for (int k = 0; k < layers[i].n_nodes; ++k) a->data[a->size++] = layers[i].nodes[k];
  }
  return a;
}

/* All claimed nodes: the layers' and the shape-only ones. */
static TfLiteIntArray *all_nodes(const kbnn_layer *layers, int n, const int *aux, int n_aux) {
  TfLiteIntArray *a = node_list(layers, n);
  if (!a || n_aux == 0) return a;
  TfLiteIntArray *b =
      (TfLiteIntArray *)realloc(a, sizeof(TfLiteIntArray) + sizeof(int) * (a->size + n_aux + 1));
  if (!b) {
    free(a);
    return NULL;
  }
  for (int i = 0; i < n_aux; ++i) b->data[b->size++] = aux[i];
  return b;
}

static int shares_nodes(const kbnn_layer *a, const kbnn_layer *b) {
  TfLiteIntArray *la = node_list(a, 1), *lb = node_list(b, 1);
  int shared = !la || !lb;
  for (int i = 0; !shared && i < la->size; ++i) shared = contains(lb, la->data[i]);
  free(la);
  free(lb);
  return shared;
}

/* Folds the sign quantizer SELECT_V2(GREATER_EQUAL(y, 0), 1, -1) in front of an unpack
 * layer's FULLY_CONNECTED: the layer then reads y and takes its bits as y >= 0 (the same
 * float comparison, so -0 gives +1 and NaN gives -1, as the stock ops do). */
static void fold_sign(TfLiteContext *ctx, const graph_index *g, kbnn_layer *l) {
  TfLiteNode *select, *compare;
  if (l->design != DESIGN_UNPACK || l->flatten >= 0 || l->input < 0 ||
      (size_t)l->input >= g->n || g->count[l->input] != 1)
    return;
  int select_index = g->producer[l->input];
  if (producer_op(ctx, g, l->input, &select) != kTfLiteBuiltinSelectV2 ||
      select->inputs->size != 3)
    return;
  TfLiteTensor *on = tensor_at(ctx, node_input(select, 1)),
               *off = tensor_at(ctx, node_input(select, 2));
  if (!is_const(on, kTfLiteFloat32) || numel(on) != 1 || on->data.f[0] != 1.0f ||
      !is_const(off, kTfLiteFloat32) || numel(off) != 1 || off->data.f[0] != -1.0f)
    return;
  int cond = node_input(select, 0);
  if (cond < 0 || (size_t)cond >= g->n || g->count[cond] != 1) return;
  int compare_index = g->producer[cond];
  if (producer_op(ctx, g, cond, &compare) != kTfLiteBuiltinGreaterEqual ||
      compare->inputs->size != 2 || !const_scalar_is(ctx, node_input(compare, 1), 0.0f))
    return;
  int y = node_input(compare, 0);
  TfLiteTensor *yt = tensor_at(ctx, y), *x = tensor_at(ctx, l->input);
  if (!yt || !x || yt->type != kTfLiteFloat32 || yt->allocation_type == kTfLiteMmapRo ||
      numel(yt) != numel(x) || rank(yt) < 1 ||
      dim(yt, rank(yt) - 1) != (l->conv_op ? l->conv.in_c : l->k))
    return;
  add_node(l, compare_index);
  add_node(l, select_index);
  l->input = y;
  l->sign_input = 1;
}

/* ---- shape-only nodes -------------------------------------------------------------------- */

static int layer_has_node(const kbnn_layer *l, int index) {
  for (int k = 0; k < l->n_nodes; ++k)
    if (l->nodes[k] == index) return 1;
  for (int k = 0; k < l->n_chain; ++k)
    if (l->chain[k] == index) return 1;
  return 0;
}

static void drop_flatten(kbnn_layer *l) {
  if (l->flatten < 0) return;
  int kept = 0;
  for (int k = 0; k < l->n_nodes; ++k)
    if (l->nodes[k] != l->flatten) l->nodes[kept++] = l->nodes[k];
  l->n_nodes = kept;
  l->input = l->flat_output;
  l->flatten = -1;
}

/* The value of a shape tensor: evaluated, or a constant. */
static int shape_value(TfLiteContext *ctx, const kbnn_shape_env *env, int t,
                       kbnn_shape_value *v) {
  const kbnn_shape_value *known = kbnn_shape_get(env, t);
  if (known) {
    *v = *known;
    return 1;
  }
  TfLiteTensor *c = tensor_at(ctx, t);
  if (!is_const(c, kTfLiteInt32) || rank(c) != 1 || numel(c) > 8) return 0;
  memset(v, 0, sizeof *v);
  v->type = kTfLiteInt32;
  v->rank = 1;
  v->dims[0] = dim(c, 0);
  v->n = numel(c);
  v->data = c->data.raw;
  return 1;
}

/* What the delegate relies on from the shape-only values, checked against `env`: the zero
 * is 0, the byte table holds the layout's levels, a folded flatten keeps [., k] rows. */
static int aux_values_ok(TfLiteContext *ctx, const kbnn_state *s, const kbnn_shape_env *env,
                         const kbnn_layer *l, int check_chain, int check_flatten) {
  if (check_chain && l->aux_checked) {
    const kbnn_shape_value *zero = kbnn_shape_get(env, l->zero);
    const kbnn_shape_value *table = kbnn_shape_get(env, l->table);
    const float *expected = l->zero_low ? s->table_01 : s->table_pm1;
    if (!zero || zero->type != kTfLiteInt32 || zero->n != 1 || ((int32_t *)zero->data)[0] != 0)
      return 0;
    if (!table || table->type != kTfLiteFloat32 || table->n != 2048 ||
        memcmp(table->data, expected, sizeof s->table_01) != 0)
      return 0;
  }
  if (check_flatten && l->flatten >= 0) {
    kbnn_shape_value v;
    if (!shape_value(ctx, env, l->flat_shape, &v) || v.type != kTfLiteInt32 || v.n < 1) return 0;
    long product = 1, unknown = 0;
    for (long i = 0; i < v.n; ++i) {
      int d = ((int32_t *)v.data)[i];
      if (d == -1) unknown++;
      else if (d < 0) return 0;
      else product *= d;
      if (product > 0x7fffffffL) return 0;
    }
    long n = numel(tensor_at(ctx, l->input));
    int last = ((int32_t *)v.data)[v.n - 1];
    if (unknown > 1 || last != l->k || n < 0 || (unknown ? product == 0 || n % product : product != n))
      return 0;
  }
  return 1;
}

/* Finds the shape-only nodes that only feed claimed layers (the run-time zero and byte
 * table; a flatten's target shape), evaluates them and checks the values the layers rely
 * on. Claims them all or none: returns their count, stored in `aux` (plan order). */
static int find_aux(TfLiteContext *ctx, const kbnn_state *s, const TfLiteIntArray *plan,
                    const graph_index *g, kbnn_layer *layers, int n, int *aux,
                    kbnn_shape_op *aux_ops) {
  kbnn_shape_op *ops = aux_ops; /* filled in plan order, compacted at the end */
  kbnn_shape_env env;
  int n_aux = 0, ok = 1;
  char *evaluable = (char *)calloc((size_t)plan->size + 1, 1);
  char *claimed = (char *)calloc((size_t)plan->size + 1, 1);
  if (!evaluable || !claimed || !kbnn_shape_env_init(&env, ctx->tensors_size)) {
    free(evaluable);
    free(claimed);
    return 0;
  }
  for (int i = 0; i < plan->size; ++i) {
    int mine = 0;
    for (int j = 0; j < n && !mine; ++j) mine = layer_has_node(&layers[j], plan->data[i]);
    if (!mine)
      evaluable[i] = (char)(kbnn_shape_op_read(ctx, plan->data[i], &ops[i]) &&
                            kbnn_shape_eval(ctx, &env, &ops[i]));
  }
  /* Flatten: RESHAPE(data, shape) -> FULLY_CONNECTED of an unpack layer. The shape is
   * only checked (the layer reads the data as rows of k either way). */
  for (int j = 0; j < n; ++j) {
    kbnn_layer *l = &layers[j];
    TfLiteNode *node;
    if (l->design != DESIGN_UNPACK || l->conv_op || l->input < 0 || (size_t)l->input >= g->n ||
        g->count[l->input] != 1 || producer_op(ctx, g, l->input, &node) != kTfLiteBuiltinReshape)
      continue;
    int data = node_input(node, 0), shape = node_input(node, 1);
    TfLiteTensor *d = tensor_at(ctx, data);
    if (node->inputs->size != 2 || !d || d->type != kTfLiteFloat32 ||
        d->allocation_type == kTfLiteMmapRo)
      continue;
    l->flatten = g->producer[l->input];
    l->flat_shape = shape;
    l->flat_output = l->input;
    l->input = data;
    add_node(l, l->flatten);
    if (!aux_values_ok(ctx, s, &env, l, 0, 1)) drop_flatten(l);
  }
  for (int j = 0; j < n; ++j) {
    kbnn_layer *l = &layers[j];
    if (l->design != DESIGN_UNPACK || l->n_chain == 0) continue;
    l->aux_checked = 1;
    if (!aux_values_ok(ctx, s, &env, l, 1, 0)) l->aux_checked = ok = 0;
  }
  /* Claim, from the last node back, each evaluable node whose output only claimed nodes
   * read; a layer reads its zero and table only as checked values. */
  for (int i = plan->size - 1; ok && i >= 0; --i) {
    TfLiteNode *node;
    if (!evaluable[i] || node_op(ctx, plan->data[i], &node) < 0) continue;
    int t = node_output(node), readers = 0, all = 1;
    for (int c = 0; c < plan->size && all; ++c) {
      TfLiteNode *reader;
      if (node_op(ctx, plan->data[c], &reader) < 0) continue;
      int reads = 0;
      for (int k = 0; k < reader->inputs->size; ++k) reads |= reader->inputs->data[k] == t;
      if (!reads) continue;
      readers++;
      int by_claimed = claimed[c];
      for (int j = 0; j < n && !by_claimed; ++j)
        if (layer_has_node(&layers[j], plan->data[c]))
          by_claimed = (t != layers[j].zero && t != layers[j].table) || layers[j].aux_checked;
      all = by_claimed;
    }
    if (all && readers > 0) claimed[i] = 1;
  }
  for (int j = 0; ok && j < n; ++j) { /* all or none: every checked input must be claimed */
    const kbnn_layer *l = &layers[j];
    int need[3] = {l->aux_checked ? l->zero : -1, l->aux_checked ? l->table : -1,
                   l->flatten >= 0 && !is_const(tensor_at(ctx, l->flat_shape), kTfLiteInt32)
                       ? l->flat_shape : -1};
    for (int k = 0; k < 3 && ok; ++k) {
      if (need[k] < 0) continue;
      int found = 0;
      for (int i = 0; i < plan->size && !found; ++i)
        found = claimed[i] && plan->data[i] == g->producer[need[k]];
      ok = found;
    }
  }
  if (ok)
    for (int i = 0; i < plan->size; ++i)
      if (claimed[i]) {
        aux_ops[n_aux] = ops[i]; /* n_aux <= i */
        aux[n_aux++] = plan->data[i];
      }
  if (!ok || n_aux == 0) {
    n_aux = 0;
    for (int j = 0; j < n; ++j) {
      layers[j].aux_checked = 0;
      if (layers[j].flatten >= 0 && !is_const(tensor_at(ctx, layers[j].flat_shape), kTfLiteInt32))
        drop_flatten(&layers[j]);
    }
  }
  kbnn_shape_env_free(&env);
  free(evaluable);
  free(claimed);
  return n_aux;
}

/* Re-evaluates a partition's shape-only nodes (the input may have been resized) and checks
 * what its layers rely on. */
static int partition_aux_ok(TfLiteContext *ctx, const kbnn_state *s, const kbnn_shape_op *aux,
                            int n_aux, const kbnn_part *parts, int n_parts) {
  kbnn_shape_env env;
  if (!kbnn_shape_env_init(&env, ctx->tensors_size)) return 0;
  int ok = 1;
  for (int i = 0; i < n_aux && ok; ++i) ok = kbnn_shape_eval(ctx, &env, &aux[i]);
  for (int i = 0; i < n_parts && ok; ++i)
    ok = aux_values_ok(ctx, s, &env, &parts[i].layer, parts[i].has_chain, parts[i].has_compute);
  kbnn_shape_env_free(&env);
  return ok;
}

/* The layout version a file declares in its "kbnn_layout" metadata ("kbnn layout N"):
 * 0 if it declares none (the patterns alone decide), -1 if the entry is malformed. */
static int file_layout_version(TfLiteContext *ctx) {
  const char *data = NULL;
  size_t bytes = 0;
  if (!ctx->GetModelMetadata ||
      ctx->GetModelMetadata(ctx, KBNN_LAYOUT_METADATA, &data, &bytes) != kTfLiteOk || !data)
    return 0;
  static const char prefix[] = "kbnn layout ";
  size_t n = sizeof prefix - 1;
  if (bytes <= n || bytes > 32 || memcmp(data, prefix, n) != 0) return -1;
  int version = 0;
  for (size_t i = n; i < bytes; ++i) {
    if (data[i] < '0' || data[i] > '9' || version > 100000) return -1;
    version = version * 10 + (data[i] - '0');
  }
  return version;
}

static TfLiteStatus delegate_prepare(TfLiteContext *ctx, TfLiteDelegate *delegate) {
  kbnn_state *s = (kbnn_state *)delegate->data_;
  int threads = s->options.num_threads > 0 ? s->options.num_threads
                : ctx->recommended_num_threads > 0 ? ctx->recommended_num_threads : 1;
  if (threads != s->pool_threads) { /* follow the interpreter's thread count */
    kbnn_pool_destroy(s->pool);
    s->pool = kbnn_pool_create(threads);
    s->pool_threads = kbnn_pool_threads(s->pool);
  }
  int version = file_layout_version(ctx);
  if (version != 0 && version != KBNN_LAYOUT_VERSION) {
    if (s->options.verbose)
      fprintf(stderr, "kbnn delegate: the file says kbnn layout %d, this build reads %d; "
              "every node is left to the runtime\n", version, KBNN_LAYOUT_VERSION);
    return kTfLiteOk;
  }
  TfLiteIntArray *plan_view = NULL;
  if (ctx->GetExecutionPlan(ctx, &plan_view) != kTfLiteOk || !plan_view) return kTfLiteError;
  if (!ctx->PreviewDelegatePartitioning) return kTfLiteOk; /* cannot check partitions: claim none */
  TfLiteIntArray *plan =
      (TfLiteIntArray *)malloc(sizeof(TfLiteIntArray) + sizeof(int) * (plan_view->size + 1));
  if (!plan) return kTfLiteError;
  plan->size = plan_view->size;
  memcpy(plan->data, plan_view->data, sizeof(int) * (size_t)plan_view->size);

  graph_index g = {0};
  kbnn_layer *layers = (kbnn_layer *)calloc((size_t)plan->size + 1, sizeof(kbnn_layer));
  int n = 0, n_aux = 0, *aux = NULL;
  kbnn_shape_op *aux_ops = NULL;
  TfLiteStatus status = kTfLiteOk;
  if (!layers || !build_index(ctx, plan, &g)) {
    status = kTfLiteError;
    goto done;
  }
  for (int i = 0; i < plan->size; ++i) {
    TfLiteNode *node;
    if (node_op(ctx, plan->data[i], &node) != kTfLiteBuiltinBitwiseXor) continue;
    kbnn_layer *l = &layers[n];
    int ok = match_unpack(ctx, &g, plan->data[i], node, l), unpack_line = l->declined_at;
    if (!ok) ok = match_xor(ctx, &g, plan->data[i], node, l);
    if (ok && (l->n_nodes > (int)(sizeof l->nodes / sizeof l->nodes[0]) || l->n_chain > MAX_CHAIN))
      ok = 0;
    for (int j = 0; ok && j < n; ++j) ok = !shares_nodes(&layers[j], l);
    if (s->options.verbose)
      fprintf(stderr, "kbnn delegate: node %d (BITWISE_XOR): %s (delegate.c lines %d, %d)\n",
              plan->data[i],
              ok ? (l->design == DESIGN_XOR ? "xor-popcount dense layer"
                    : l->conv_op ? "packed conv layer" : "packed dense layer")
                 : "not a layer this build runs, left to the runtime",
              unpack_line, l->declined_at);
    if (ok) n++;
  }
  for (int i = 0; i < n; ++i) fold_sign(ctx, &g, &layers[i]);
  aux = (int *)calloc((size_t)plan->size + 1, sizeof(int));
  aux_ops = (kbnn_shape_op *)calloc((size_t)plan->size + 1, sizeof(kbnn_shape_op));
  if (!aux || !aux_ops) {
    status = kTfLiteError;
    goto done;
  }
  if (n > 0) n_aux = find_aux(ctx, s, plan, &g, layers, n, aux, aux_ops);
  if (s->options.verbose && n_aux)
    fprintf(stderr, "kbnn delegate: %d shape-only nodes (zero, byte table, flatten shape) "
            "evaluated and checked\n", n_aux);
  /* Drop layers whose partition would not be whole chains and computations, until the
   * partitioning is stable. */
  for (int round = 0; n > 0 && round < 64; ++round) {
    TfLiteIntArray *nodes = all_nodes(layers, n, aux, n_aux);
    TfLiteDelegateParams *parts = NULL;
    int n_parts = 0;
    if (!nodes) {
      status = kTfLiteError;
      goto done;
    }
    if (ctx->PreviewDelegatePartitioning(ctx, nodes, &parts, &n_parts) != kTfLiteOk) {
      free(nodes);
      n = 0;
      break;
    }
    free(nodes);
    int dropped = 0;
    for (int p = 0; p < n_parts; ++p) {
      if (s->options.verbose > 1) {
        const TfLiteDelegateParams *q = &parts[p];
        fprintf(stderr, "kbnn delegate: partition %d: %d nodes, inputs", p,
                q->nodes_to_replace->size);
        for (int k = 0; k < q->input_tensors->size; ++k)
          fprintf(stderr, " %d", q->input_tensors->data[k]);
        fprintf(stderr, ", outputs");
        for (int k = 0; k < q->output_tensors->size; ++k)
          fprintf(stderr, " %d", q->output_tensors->data[k]);
        fprintf(stderr, "\n");
      }
      if (partition_ok(ctx, &parts[p], layers, n, aux, n_aux)) continue;
      if (n_aux) { /* first give the shape-only nodes back to the runtime */
        n_aux = 0;
        for (int i = 0; i < n; ++i) {
          layers[i].aux_checked = 0;
          if (layers[i].flatten >= 0 &&
              !is_const(tensor_at(ctx, layers[i].flat_shape), kTfLiteInt32))
            drop_flatten(&layers[i]);
        }
        dropped = 1;
        break;
      }
      for (int i = 0; i < n; ++i) {
        TfLiteIntArray *mine = node_list(&layers[i], 1);
        int touches = 0;
        for (int k = 0; mine && k < mine->size; ++k)
          touches |= contains(parts[p].nodes_to_replace, mine->data[k]);
        free(mine);
        if (touches) {
          layers[i].anchor = -2; /* dropped */
          dropped = 1;
        }
      }
    }
    if (!dropped) break;
    int kept = 0;
    for (int i = 0; i < n; ++i)
      if (layers[i].anchor != -2) layers[kept++] = layers[i];
    n = kept;
  }
  if (n > 0) {
    TfLiteIntArray *nodes = all_nodes(layers, n, aux, n_aux);
    if (!nodes) {
      status = kTfLiteError;
      goto done;
    }
    TfLiteRegistration reg;
    memset(&reg, 0, sizeof reg);
    reg.init = kernel_init;
    reg.free = kernel_free;
    reg.prepare = kernel_prepare;
    reg.invoke = kernel_invoke;
    reg.custom_name = "KbnnBinaryLayers";
    reg.version = 1;
    s->pending = layers;
    s->n_pending = n;
    s->pending_aux = aux;
    s->pending_aux_ops = aux_ops;
    s->n_pending_aux = n_aux;
    status = ctx->ReplaceNodeSubsetsWithDelegateKernels(ctx, reg, nodes, delegate);
    s->pending = NULL;
    s->n_pending = 0;
    s->pending_aux = NULL;
    s->pending_aux_ops = NULL;
    s->n_pending_aux = 0;
    free(nodes);
  }
done:
  free(plan);
  free(g.count);
  free(g.consumer);
  free(g.producer);
  free(layers);
  free(aux);
  free(aux_ops);
  return status;
}

kbnn_delegate_options kbnn_delegate_options_default(void) {
  kbnn_delegate_options o;
  o.num_threads = 0;
  o.max_kernel_level = KBNN_LEVEL_BEST;
  o.verbose = 0;
  return o;
}

TfLiteDelegate *kbnn_delegate_create(const kbnn_delegate_options *options) {
  TfLiteDelegate *d = (TfLiteDelegate *)calloc(1, sizeof(TfLiteDelegate));
  kbnn_state *s = (kbnn_state *)calloc(1, sizeof(kbnn_state));
  if (!d || !s) {
    free(d);
    free(s);
    return NULL;
  }
  s->options = options ? *options : kbnn_delegate_options_default();
  s->kernels = kbnn_select_kernels(s->options.max_kernel_level);
  int threads = s->options.num_threads > 0 ? s->options.num_threads : 1;
  s->pool = kbnn_pool_create(threads);
  s->pool_threads = kbnn_pool_threads(s->pool);
  for (int b = 0; b < 256; ++b)
    for (int k = 0; k < 8; ++k) {
      s->table_01[b * 8 + k] = (float)((b >> k) & 1);
      s->table_pm1[b * 8 + k] = 2.0f * (float)((b >> k) & 1) - 1.0f;
    }
  d->data_ = s;
  d->Prepare = delegate_prepare;
  d->flags = kTfLiteDelegateFlagsAllowDynamicTensors;
  return d;
}

void kbnn_delegate_delete(TfLiteDelegate *delegate) {
  if (!delegate) return;
  kbnn_state *s = (kbnn_state *)delegate->data_;
  if (s) kbnn_pool_destroy(s->pool);
  free(s);
  free(delegate);
}

int kbnn_delegate_claimed_layers(const TfLiteDelegate *delegate) {
  return delegate && delegate->data_ ? ((const kbnn_state *)delegate->data_)->claimed : -1;
}

const char *kbnn_delegate_kernels_name(const TfLiteDelegate *delegate) {
  return delegate && delegate->data_ ? ((const kbnn_state *)delegate->data_)->kernels.name : "";
}

int kbnn_delegate_threads(const TfLiteDelegate *delegate) {
  return delegate && delegate->data_ ? ((const kbnn_state *)delegate->data_)->pool_threads : 0;
}

int kbnn_layout_version(void) { return KBNN_LAYOUT_VERSION; }

TfLiteDelegate *tflite_plugin_create_delegate(char **keys, char **values, size_t count,
                                              void (*report_error)(const char *)) {
  kbnn_delegate_options o = kbnn_delegate_options_default();
  for (size_t i = 0; i < count; ++i) {
    char *end = NULL;
    long v = strtol(values[i], &end, 10);
    int valid = end && end != values[i] && *end == '\0';
    if (valid && strcmp(keys[i], "num_threads") == 0 && v >= 0 && v <= 256) {
      o.num_threads = (int)v;
    } else if (valid && strcmp(keys[i], "max_kernel_level") == 0 && v >= 0) {
      o.max_kernel_level = (int)v;
    } else if (valid && strcmp(keys[i], "verbose") == 0) {
      o.verbose = (int)v;
    } else {
      if (report_error)
        report_error("kbnn delegate: unknown option or bad value; options are num_threads, "
                     "max_kernel_level, verbose (integers)");
      return NULL;
    }
  }
  return kbnn_delegate_create(&o);
}

void tflite_plugin_destroy_delegate(TfLiteDelegate *delegate) { kbnn_delegate_delete(delegate); }
