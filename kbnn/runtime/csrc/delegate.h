/* The kbnn LiteRT delegate: runs the packed binary layers of a kbnn export with bit kernels.
 *
 * Loaded by LiteRT as an external delegate (tflite_plugin_create_delegate /
 * tflite_plugin_destroy_delegate), or linked by an app that creates it with
 * kbnn_delegate_create and passes it to its interpreter's options:
 *
 *   kbnn_delegate_options options = kbnn_delegate_options_default();
 *   options.num_threads = 2;
 *   TfLiteDelegate *delegate = kbnn_delegate_create(&options);
 *   ... InterpreterOptions add delegate, build, run ...
 *   kbnn_delegate_delete(delegate);
 */
#ifndef KBNN_DELEGATE_H_
#define KBNN_DELEGATE_H_

#include "tflite_abi.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct kbnn_delegate_options {
  int num_threads;      /* <= 0: the interpreter's thread count */
  int max_kernel_level; /* KBNN_LEVEL_*: caps the kernels run-time dispatch may pick */
  int verbose;          /* 1: report each claimed or declined layer on stderr */
} kbnn_delegate_options;

kbnn_delegate_options kbnn_delegate_options_default(void);
TfLiteDelegate *kbnn_delegate_create(const kbnn_delegate_options *options);
void kbnn_delegate_delete(TfLiteDelegate *delegate);

/* Layers claimed by this delegate so far (all interpreters), for tests and --info. */
int kbnn_delegate_claimed_layers(const TfLiteDelegate *delegate);
/* The kernel set run-time dispatch picked, e.g. "avx512-vpopcntdq". */
const char *kbnn_delegate_kernels_name(const TfLiteDelegate *delegate);
/* Threads the delegate's kernels run on (after an interpreter prepared it). */
int kbnn_delegate_threads(const TfLiteDelegate *delegate);
/* The version of the layer description this build reads. */
int kbnn_layout_version(void);

/* LiteRT's external-delegate entry points; options: "num_threads", "max_kernel_level",
 * "verbose" (integers as strings). */
TfLiteDelegate *tflite_plugin_create_delegate(char **keys, char **values, size_t count,
                                              void (*report_error)(const char *));
void tflite_plugin_destroy_delegate(TfLiteDelegate *delegate);

#ifdef __cplusplus
}
#endif

#endif /* KBNN_DELEGATE_H_ */
