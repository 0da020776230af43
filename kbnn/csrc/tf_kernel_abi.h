/* The subset of TensorFlow's C kernel and op-definition API (tensorflow/c/kernels.h,
 * ops.h, tf_tensor.h, tf_status.h, tf_datatype.h) that kbnn's quantizer ops use.
 *
 * Declared here, not included, so that the ops build with a C compiler alone: the
 * functions resolve at load time against the libtensorflow_framework that
 * tf.load_op_library runs in. This C API is TensorFlow's stable one for plugins; the
 * enum values below are fixed by it. tests/test_quantizer_ops.py loads the ops into the
 * installed TensorFlow and checks every output against TensorFlow's own ops.
 */
#ifndef KBNN_TF_KERNEL_ABI_H_
#define KBNN_TF_KERNEL_ABI_H_

#include <stdint.h>
#include <stddef.h>

typedef enum { TF_FLOAT = 1, TF_BOOL = 10 } TF_DataType;
typedef enum { TF_OK = 0, TF_INVALID_ARGUMENT = 3 } TF_Code;

typedef struct TF_Status TF_Status;
typedef struct TF_Tensor TF_Tensor;
typedef struct TF_OpDefinitionBuilder TF_OpDefinitionBuilder;
typedef struct TF_ShapeHandle TF_ShapeHandle;
typedef struct TF_ShapeInferenceContext TF_ShapeInferenceContext;
typedef struct TF_KernelBuilder TF_KernelBuilder;
typedef struct TF_OpKernelConstruction TF_OpKernelConstruction;
typedef struct TF_OpKernelContext TF_OpKernelContext;

TF_Status *TF_NewStatus(void);
void TF_DeleteStatus(TF_Status *status);
TF_Code TF_GetCode(const TF_Status *status);
void TF_SetStatus(TF_Status *status, TF_Code code, const char *message);

TF_OpDefinitionBuilder *TF_NewOpDefinitionBuilder(const char *op_name);
void TF_OpDefinitionBuilderAddInput(TF_OpDefinitionBuilder *builder, const char *spec);
void TF_OpDefinitionBuilderAddOutput(TF_OpDefinitionBuilder *builder, const char *spec);
void TF_OpDefinitionBuilderAddAttr(TF_OpDefinitionBuilder *builder, const char *spec);
void TF_OpDefinitionBuilderSetShapeInferenceFunction(
    TF_OpDefinitionBuilder *builder,
    void (*shape_inference)(TF_ShapeInferenceContext *ctx, TF_Status *status));
void TF_RegisterOpDefinition(TF_OpDefinitionBuilder *builder, TF_Status *status);

TF_ShapeHandle *TF_NewShapeHandle(void);
void TF_DeleteShapeHandle(TF_ShapeHandle *handle);
void TF_ShapeInferenceContextGetInput(TF_ShapeInferenceContext *ctx, int i,
                                      TF_ShapeHandle *handle, TF_Status *status);
void TF_ShapeInferenceContextSetOutput(TF_ShapeInferenceContext *ctx, int i,
                                       TF_ShapeHandle *handle, TF_Status *status);

TF_KernelBuilder *TF_NewKernelBuilder(const char *op_name, const char *device_name,
                                      void *(*create)(TF_OpKernelConstruction *),
                                      void (*compute)(void *, TF_OpKernelContext *),
                                      void (*destroy)(void *));
void TF_RegisterKernelBuilder(const char *kernel_name, TF_KernelBuilder *builder,
                              TF_Status *status);
void TF_OpKernelConstruction_GetAttrFloat(TF_OpKernelConstruction *ctx, const char *name,
                                          float *value, TF_Status *status);
void TF_OpKernelConstruction_Failure(TF_OpKernelConstruction *ctx, TF_Status *status);

void TF_GetInput(TF_OpKernelContext *ctx, int i, TF_Tensor **tensor, TF_Status *status);
TF_Tensor *TF_AllocateOutput(TF_OpKernelContext *ctx, int index, TF_DataType dtype,
                             const int64_t *dims, int num_dims, size_t len, TF_Status *status);
void TF_OpKernelContext_Failure(TF_OpKernelContext *ctx, TF_Status *status);

int TF_NumDims(const TF_Tensor *tensor);
int64_t TF_Dim(const TF_Tensor *tensor, int dim_index);
int64_t TF_TensorElementCount(const TF_Tensor *tensor);
void *TF_TensorData(const TF_Tensor *tensor);
void TF_DeleteTensor(TF_Tensor *tensor);

#endif  /* KBNN_TF_KERNEL_ABI_H_ */
