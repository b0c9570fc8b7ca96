/* The ferry function plugin ABI, version 1.
 *
 * A function is a shared library that exports exactly one symbol, `ferry_function_entry`, which
 * returns a static descriptor (ferry_function_v1): the function's name, the device it runs on
 * (CPU or GPU), its declared input and output tensors, and three entry points: `create`,
 * `execute` and `destroy`. The node agent loads the library from its plugin directory only
 * (`ferry-agent --plugin-dir DIR`), checks the ABI version and the declarations, and serves the
 * function like a built-in runtime: requests are validated against the declared tensors and
 * batched, and each batch reaches `execute` as contiguous buffers.
 *
 * This header is plain C (C99 or later, and C++): nothing but C types crosses it. It is the whole
 * contract; ferry/function.hpp is an optional header-only C++ wrapper on top of it.
 *
 * VERSIONING. FERRY_FUNCTION_ABI_MAJOR changes when a struct or a rule below changes
 * incompatibly; FERRY_FUNCTION_ABI_MINOR when something is added that an older agent can ignore
 * (fields appended to the end of a struct, whose `struct_size` then grows). At load the agent
 * calls ferry_function_entry(its major, its minor) and refuses the library unless the
 * descriptor's abi_major equals its own and the descriptor's abi_minor is not above its own.
 * The first three fields of ferry_function_v1 (struct_size, abi_major, abi_minor) keep their
 * place in every version, so any agent can read them.
 *
 * DECLARATIONS. Every tensor has a name (unique among the inputs, and among the outputs), a
 * KServe v2 datatype name ("BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16",
 * "INT32", "INT64", "FP16", "BF16", "FP32", "FP64", "BYTES") and a shape whose first dim is -1:
 * the batch dim, along which the requests of a batch are stacked. Other dims are >= 1, or -1 for
 * a size that varies: for an input, each request says it (requests with different sizes are
 * never stacked into one call); for an output, `execute` decides it and allocates the output
 * with host->allocate_output. Ranks are 1 to 8.
 *
 * MEMORY. Tensors are row-major, little-endian, with no padding. A CPU function sees host
 * memory. A GPU function sees device memory on its GPU for every fixed-size datatype, and host
 * memory for BYTES tensors (strings are parsed on the CPU). BYTES tensors use the layout of the
 * KServe v2 binary tensor extension: each element, in row-major order, is a 4-byte little-endian
 * unsigned length followed by that many bytes; byte_size is the total of those.
 *
 * OWNERSHIP AND LIFETIME. The descriptor, its strings and its arrays are the library's and must
 * stay valid and unchanged while the library is loaded. Every ferry_batch, ferry_input,
 * ferry_output, shape array and data buffer passed to `execute` is the agent's and is valid only
 * until `execute` returns: keep no pointer into them. The config string is valid only during
 * `create`. The host API table (ferry_host_api) stays valid until `destroy` returns. A
 * ferry_error is created only by host->error_new, and whoever receives one from the plugin (the
 * agent) frees it: a plugin never frees an error, and returns or stores each error once.
 *
 * THREADING AND INSTANCES. The agent creates one instance per executor of the function
 * (spec.batching.instances in the manifest, default 1) and calls `execute` on one instance
 * from one thread at a time: never concurrently on the same instance, but different instances
 * may run at the same time on different threads, so state shared between instances (globals,
 * statics) needs its own locking. `create` and `destroy` are never called concurrently with
 * `execute` on the same instance. host->error_new may be called from any thread at any time
 * between create and destroy; host->allocate_output only while the `execute` whose batch it
 * names runs, one call at a time.
 *
 * GPU STREAMS. A GPU function's instance gets its GPU ordinal and a CUDA stream (cudaStream_t
 * passed as void*). `execute` must enqueue all its device work on that stream; it may return
 * before that work finishes: the agent synchronises the stream after `execute` returns and
 * before it reads the outputs or reuses the inputs. The current CUDA device is set to the
 * ordinal during every call.
 *
 * ERRORS. Entry points return a ferry_error*: NULL means success. An error returned by `create`
 * fails the function's load (it is reported not ready with the message); an error returned by
 * `execute` fails every request of the batch; setting batch->item_errors[i] fails only request
 * i (its outputs are then ignored). Messages are UTF-8 and should say what was wrong with what.
 * A C++ exception must never leave an entry point.
 *
 * IN-PROCESS. A plugin runs inside the agent's process: a crash, abort or memory corruption in
 * the plugin takes the whole agent down, with every function it serves. Try a new function out
 * of process first (ferry-function-check, then an agent of its own, under AddressSanitizer if you
 * can), and run functions you do not trust on an agent that serves nothing else.
 */
#ifndef FERRY_FUNCTION_H_
#define FERRY_FUNCTION_H_

#include <stddef.h>
#include <stdint.h>

#define FERRY_FUNCTION_ABI_MAJOR 1
#define FERRY_FUNCTION_ABI_MINOR 0

/* The name of the one symbol a function library exports. */
#define FERRY_FUNCTION_ENTRY_SYMBOL "ferry_function_entry"

#ifdef __cplusplus
#define FERRY_FUNCTION_EXTERN_C extern "C"
#else
#define FERRY_FUNCTION_EXTERN_C
#endif

/* Marks the entry point for export. Build function libraries with -fvisibility=hidden so that
 * this is the only symbol they export. */
#if defined(__GNUC__) || defined(__clang__)
#define FERRY_FUNCTION_EXPORT FERRY_FUNCTION_EXTERN_C __attribute__((visibility("default")))
#else
#define FERRY_FUNCTION_EXPORT FERRY_FUNCTION_EXTERN_C
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* An error: a message owned by the agent. Opaque; created by ferry_host_api.error_new. */
typedef struct ferry_error ferry_error;

/* A function instance: whatever the library wants it to be. Opaque to the agent. */
typedef struct ferry_instance ferry_instance;

typedef enum ferry_device_kind { FERRY_DEVICE_CPU = 0, FERRY_DEVICE_GPU = 1 } ferry_device_kind;

/* One declared input or output. */
typedef struct ferry_tensor_decl {
  const char* name;     /* non-empty, unique within the inputs (or the outputs) */
  const char* datatype; /* KServe v2 name: "FP32", "INT32", "BYTES", ... */
  const int64_t* shape; /* rank dims; shape[0] == -1 (the batch dim); others >= 1 or -1 */
  uint32_t rank;        /* 1..8 */
} ferry_tensor_decl;

/* Where an instance runs. */
typedef struct ferry_device {
  ferry_device_kind kind;
  int32_t gpu_ordinal; /* CUDA device ordinal for GPU functions; -1 for CPU functions */
  void* cuda_stream;   /* cudaStream_t for GPU functions; NULL for CPU functions */
} ferry_device;

/* One stacked input of a batch, in declaration order. */
typedef struct ferry_input {
  const char* name;
  const void* data;     /* host memory, or device memory for a GPU function's fixed-size input */
  const int64_t* shape; /* rank dims; shape[0] is the batch's total rows */
  uint32_t rank;
  uint64_t byte_size;
} ferry_input;

/* One output of a batch, in declaration order. The agent writes these structs; the plugin
 * writes only into `data`. When every non-batch dim is declared fixed and the datatype is not
 * BYTES, the agent has allocated `data` (byte_size bytes, shape filled in) before `execute`.
 * Otherwise `data` is NULL and `execute` must call host->allocate_output once for it. */
typedef struct ferry_output {
  const char* name;
  void* data;
  const int64_t* shape;
  uint32_t rank;
  uint64_t byte_size;
} ferry_output;

typedef struct ferry_batch ferry_batch;

/* Services the agent offers a plugin. Valid from `create` until `destroy` returns. */
typedef struct ferry_host_api {
  uint32_t struct_size;
  /* A new error with a copy of `message` (NULL reads as ""). Never returns NULL. */
  ferry_error* (*error_new)(const char* message);
  /* Allocates output `index` of `batch` with `shape` (rank as declared; shape[0] must be the
   * batch's rows; declared fixed dims must match) and `byte_size` bytes (for fixed-size
   * datatypes exactly the shape's size; for BYTES the size of the encoded elements). On success
   * sets batch->outputs[index].data/shape/byte_size and returns NULL; the memory is the agent's
   * (device memory for a GPU function's fixed-size output). On a bad request returns an error
   * and the batch fails whether or not the plugin returns that error. */
  ferry_error* (*allocate_output)(const ferry_batch* batch, uint32_t index, const int64_t* shape,
                                  uint32_t rank, uint64_t byte_size);
} ferry_host_api;

/* One batch: requests stacked along the batch dim. */
struct ferry_batch {
  uint32_t struct_size;
  uint32_t num_items;        /* requests in this batch (>= 1) */
  const int64_t* item_rows;  /* rows of each request along the batch dim; they add up to rows */
  int64_t rows;              /* total rows (shape[0] of every input and output) */
  const ferry_input* inputs; /* num_inputs, in declaration order */
  uint32_t num_inputs;
  ferry_output* outputs; /* num_outputs, in declaration order */
  uint32_t num_outputs;
  /* num_items slots, all NULL on entry: set item_errors[i] = host->error_new(...) to fail only
   * request i. */
  ferry_error** item_errors;
  const ferry_host_api* host;
  void* host_reserved; /* the agent's; do not touch */
};

/* The descriptor a library returns from ferry_function_entry. Static; never freed. */
typedef struct ferry_function_v1 {
  uint32_t struct_size; /* sizeof(ferry_function_v1) as the library was compiled */
  uint32_t abi_major;   /* FERRY_FUNCTION_ABI_MAJOR as the library was compiled */
  uint32_t abi_minor;   /* FERRY_FUNCTION_ABI_MINOR as the library was compiled */
  const char* name;     /* the function's kind, for messages and model metadata, e.g. "saxpy" */
  const char* version;  /* free-form, e.g. "1.2.0"; may be NULL */
  ferry_device_kind device_kind;
  const ferry_tensor_decl* inputs;
  uint32_t num_inputs; /* >= 1 */
  const ferry_tensor_decl* outputs;
  uint32_t num_outputs; /* >= 1 */

  /* Makes an instance. `config_json` is spec.config.config from the manifest as a JSON text
   * ("{}" when absent), NUL-terminated. Returns NULL and sets *instance on success. */
  ferry_error* (*create)(const ferry_host_api* host, const char* config_json,
                         const ferry_device* device, ferry_instance** instance);
  /* Runs one batch; see the rules at the top of this file. */
  ferry_error* (*execute)(ferry_instance* instance, const ferry_batch* batch);
  /* Frees an instance. Called once per successful create, after its last execute. */
  void (*destroy)(ferry_instance* instance);
} ferry_function_v1;

/* The one exported symbol. The agent passes its own ABI version; the library returns its static
 * descriptor (or NULL when it cannot serve that agent at all). Called once per load; must not
 * fail in other ways or do expensive work (that belongs in `create`). */
typedef const ferry_function_v1* (*ferry_function_entry_fn)(uint32_t host_abi_major,
                                                            uint32_t host_abi_minor);

#ifdef __cplusplus
}
#endif

/* Defined by the library (FERRY_DEFINE_FUNCTION in ferry/function.hpp does it for C++). */
FERRY_FUNCTION_EXPORT const ferry_function_v1* ferry_function_entry(uint32_t host_abi_major,
                                                                    uint32_t host_abi_minor);

#endif /* FERRY_FUNCTION_H_ */
