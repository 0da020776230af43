/* The subset of the TensorFlow Lite C ABI that the kbnn delegate uses.
 *
 * No LiteRT wheel ships headers, so these declarations are written here from the
 * documented layout of tensorflow/lite/core/c/common.h and builtin_op_data.h
 * (TensorFlow 2.21 / ai-edge-litert 2.3). Structs the runtime hands over by
 * pointer to one element (TfLiteNode) are declared up to the last field read;
 * TfLiteTensor is declared in full because the context holds an array of them;
 * structs the delegate fills in or calls through (TfLiteContext,
 * TfLiteRegistration, TfLiteDelegate) are declared up to their last field used. Field order and types must
 * match the runtime exactly: tests/test_runtime.py loads the delegate into the
 * installed runtime and checks that it sees the graph as the Python API does.
 */
#ifndef KBNN_TFLITE_ABI_H_
#define KBNN_TFLITE_ABI_H_

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum { kTfLiteOk = 0, kTfLiteError = 1, kTfLiteDelegateError = 2 } TfLiteStatus;

typedef enum {
  kTfLiteNoType = 0,
  kTfLiteFloat32 = 1,
  kTfLiteInt32 = 2,
  kTfLiteUInt8 = 3,
  kTfLiteInt64 = 4,
  kTfLiteString = 5,
  kTfLiteBool = 6,
  kTfLiteInt16 = 7,
  kTfLiteComplex64 = 8,
  kTfLiteInt8 = 9,
  kTfLiteFloat16 = 10,
  kTfLiteFloat64 = 11,
  kTfLiteComplex128 = 12,
  kTfLiteUInt64 = 13,
  kTfLiteResource = 14,
  kTfLiteVariant = 15,
  kTfLiteUInt32 = 16,
  kTfLiteUInt16 = 17,
} TfLiteType;

typedef enum {
  kTfLiteMemNone = 0,
  kTfLiteMmapRo = 1,
  kTfLiteArenaRw = 2,
  kTfLiteArenaRwPersistent = 3,
  kTfLiteDynamic = 4,
  kTfLitePersistentRo = 5,
} TfLiteAllocationType;

typedef struct TfLiteIntArray {
  int size;
  int data[];
} TfLiteIntArray;

typedef struct TfLiteQuantizationParams {
  float scale;
  int32_t zero_point;
} TfLiteQuantizationParams;

typedef struct TfLiteQuantization {
  int type; /* TfLiteQuantizationType */
  void *params;
} TfLiteQuantization;

/* In full: TfLiteContext.tensors is an array of these, so the size must match. */
typedef struct TfLiteTensor {
  TfLiteType type;
  union {
    void *data;
    char *raw;
    const char *raw_const;
    float *f;
    int32_t *i32;
    uint8_t *uint8;
  } data;
  TfLiteIntArray *dims;
  TfLiteQuantizationParams params;
  TfLiteAllocationType allocation_type;
  size_t bytes;
  const void *allocation;
  const char *name;
  struct TfLiteDelegate *delegate;
  int buffer_handle;
  bool data_is_stale;
  bool is_variable;
  TfLiteQuantization quantization;
  void *sparsity;
  const TfLiteIntArray *dims_signature;
} TfLiteTensor;

/* Leading fields only, as for TfLiteTensor. */
typedef struct TfLiteNode {
  TfLiteIntArray *inputs;
  TfLiteIntArray *outputs;
  TfLiteIntArray *intermediates;
  TfLiteIntArray *temporaries;
  void *user_data;
  void *builtin_data;
} TfLiteNode;

struct TfLiteContext;
struct TfLiteDelegate;

typedef struct TfLiteRegistration {
  void *(*init)(struct TfLiteContext *context, const char *buffer, size_t length);
  void (*free)(struct TfLiteContext *context, void *buffer);
  TfLiteStatus (*prepare)(struct TfLiteContext *context, TfLiteNode *node);
  TfLiteStatus (*invoke)(struct TfLiteContext *context, TfLiteNode *node);
  const char *(*profiling_string)(const struct TfLiteContext *context, const TfLiteNode *node);
  int32_t builtin_code;
  const char *custom_name;
  int version;
  void *registration_external;
  void *(*async_kernel)(struct TfLiteContext *context, TfLiteNode *node);
  uint64_t inplace_operator;
} TfLiteRegistration;

typedef struct TfLiteDelegateParams {
  struct TfLiteDelegate *delegate;
  TfLiteIntArray *nodes_to_replace;
  TfLiteIntArray *input_tensors;
  TfLiteIntArray *output_tensors;
} TfLiteDelegateParams;

typedef struct TfLiteContext {
  size_t tensors_size;
  TfLiteStatus (*GetExecutionPlan)(struct TfLiteContext *context, TfLiteIntArray **plan);
  TfLiteTensor *tensors;
  void *impl_;
  TfLiteStatus (*ResizeTensor)(struct TfLiteContext *, TfLiteTensor *tensor,
                               TfLiteIntArray *new_size);
  void (*ReportError)(struct TfLiteContext *, const char *msg, ...);
  TfLiteStatus (*AddTensors)(struct TfLiteContext *, int tensors_to_add, int *first_new);
  TfLiteStatus (*GetNodeAndRegistration)(struct TfLiteContext *, int node_index,
                                         TfLiteNode **node, TfLiteRegistration **registration);
  TfLiteStatus (*ReplaceNodeSubsetsWithDelegateKernels)(struct TfLiteContext *,
                                                        TfLiteRegistration registration,
                                                        const TfLiteIntArray *nodes_to_replace,
                                                        struct TfLiteDelegate *delegate);
  int recommended_num_threads;
  void *(*GetExternalContext)(struct TfLiteContext *, int type);
  void (*SetExternalContext)(struct TfLiteContext *, int type, void *external);
  bool allow_fp32_relax_to_fp16;
  void *profiler;
  void *(*AllocatePersistentBuffer)(struct TfLiteContext *ctx, size_t bytes);
  TfLiteStatus (*AllocateBufferForEval)(struct TfLiteContext *ctx, size_t bytes, void **ptr);
  TfLiteStatus (*RequestScratchBufferInArena)(struct TfLiteContext *ctx, size_t bytes,
                                              int *buffer_idx);
  void *(*GetScratchBuffer)(struct TfLiteContext *ctx, int buffer_idx);
  TfLiteStatus (*ResizeTensorExplicit)(struct TfLiteContext *ctx, TfLiteTensor *tensor,
                                       int dims, const int *shape);
  TfLiteStatus (*PreviewDelegatePartitioning)(struct TfLiteContext *context,
                                              const TfLiteIntArray *nodes_to_replace,
                                              TfLiteDelegateParams **partition_params_array,
                                              int *num_partitions);
  TfLiteTensor *(*GetTensor)(const struct TfLiteContext *context, int tensor_idx);
  void *(*GetEvalTensor)(const struct TfLiteContext *context, int tensor_idx);
  TfLiteStatus (*GetModelMetadata)(const struct TfLiteContext *context, const char *name,
                                   const char **ptr, size_t *bytes);
} TfLiteContext;

enum { kTfLiteDelegateFlagsNone = 0, kTfLiteDelegateFlagsAllowDynamicTensors = 1 };

typedef struct TfLiteDelegate {
  void *data_;
  TfLiteStatus (*Prepare)(TfLiteContext *context, struct TfLiteDelegate *delegate);
  TfLiteStatus (*CopyFromBufferHandle)(TfLiteContext *, struct TfLiteDelegate *, int,
                                       TfLiteTensor *);
  TfLiteStatus (*CopyToBufferHandle)(TfLiteContext *, struct TfLiteDelegate *, int,
                                     TfLiteTensor *);
  void (*FreeBufferHandle)(TfLiteContext *, struct TfLiteDelegate *, int *);
  int64_t flags;
  void *opaque_delegate_builder;
} TfLiteDelegate;

/* builtin_op_data.h */
typedef enum { kTfLitePaddingUnknown = 0, kTfLitePaddingSame = 1, kTfLitePaddingValid = 2 }
    TfLitePadding;
typedef enum { kTfLiteActNone = 0 } TfLiteFusedActivation;

typedef struct {
  TfLitePadding padding;
  int stride_width;
  int stride_height;
  TfLiteFusedActivation activation;
  int dilation_width_factor;
  int dilation_height_factor;
} TfLiteConvParams;

typedef struct {
  TfLitePadding padding;
  int stride_width;
  int stride_height;
  int depth_multiplier;
  TfLiteFusedActivation activation;
  int dilation_width_factor;
  int dilation_height_factor;
} TfLiteDepthwiseConvParams;

typedef struct {
  TfLiteFusedActivation activation;
  int weights_format;
  bool keep_num_dims;
  bool asymmetric_quantize_inputs;
} TfLiteFullyConnectedParams;

typedef struct {
  TfLiteFusedActivation activation;
  bool pot_scale_int16;
} TfLiteAddParams;

typedef struct {
  TfLiteFusedActivation activation;
} TfLiteMulParams;

typedef struct {
  TfLiteFusedActivation activation;
  bool pot_scale_int16;
} TfLiteSubParams;

typedef struct {
  int axis;
  int batch_dims;
} TfLiteGatherParams;

typedef struct {
  bool keep_dims;
} TfLiteReducerParams;

typedef struct {
  int begin_mask;
  int end_mask;
  int ellipsis_mask;
  int new_axis_mask;
  int shrink_axis_mask;
  bool offset;
} TfLiteStridedSliceParams;

/* Builtin operator codes (schema.fbs BuiltinOperator). */
enum {
  kTfLiteBuiltinAdd = 0,
  kTfLiteBuiltinConv2d = 3,
  kTfLiteBuiltinDepthwiseConv2d = 4,
  kTfLiteBuiltinFullyConnected = 9,
  kTfLiteBuiltinMul = 18,
  kTfLiteBuiltinReshape = 22,
  kTfLiteBuiltinGather = 36,
  kTfLiteBuiltinTranspose = 39,
  kTfLiteBuiltinSub = 41,
  kTfLiteBuiltinStridedSlice = 45,
  kTfLiteBuiltinCast = 53,
  kTfLiteBuiltinSum = 74,
  kTfLiteBuiltinBitcast = 159,
  kTfLiteBuiltinBitwiseXor = 160,
  kTfLiteBuiltinGreaterEqual = 62,
  kTfLiteBuiltinSelectV2 = 123,
};

#if defined(__LP64__) || defined(_WIN64)
_Static_assert(sizeof(TfLiteTensor) == 112, "TfLiteTensor must match the runtime's layout");
#endif

#endif /* KBNN_TFLITE_ABI_H_ */
