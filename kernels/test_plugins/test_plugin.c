/* Test functions for kernels/plugin_runtime_test.cc, written in C99 against ferry/function.h
 * alone (which is part of what they test). One source, built once per FERRY_TEST_VARIANT:
 *   GOOD        x FP32[-1,2] -> y FP32[-1,2] = factor * x. Config {"factor": F} (default 2);
 *               a config holding "fail_create" fails create. A row whose x[0] is -1 fails its
 *               request; a batch whose first x is 999 fails as a whole.
 *   ABI_MAJOR   the GOOD function built for the next major ABI version
 *   ABI_MINOR   the GOOD function built for a newer minor ABI version
 *   NO_ENTRY    exports a misspelt entry point
 *   BAD_DTYPE   an input datatype that does not exist
 *   BAD_BATCH   an input whose first dim is not the batch dim
 *   DUP_NAMES   two inputs with one name
 *   DYNAMIC     x FP32[-1,2] -> y FP32[-1,-1] and s BYTES[-1], allocated by execute; the config
 *               picks a mistake: "wrong_rows", "wrong_bytes", "no_alloc", "bad_bytes".
 *   GPU         the GOOD declarations on device_kind GPU (never executed by the tests)
 *   WIDE        DYNAMIC with input x FP32[-1,-1]: requests of different widths
 */
#include <stdlib.h>
#include <string.h>

#include "ferry/function.h"

#define GOOD 1
#define ABI_MAJOR 2
#define ABI_MINOR 3
#define NO_ENTRY 4
#define BAD_DTYPE 5
#define BAD_BATCH 6
#define DUP_NAMES 7
#define DYNAMIC 8
#define GPU 9
#define WIDE 10

#ifndef FERRY_TEST_VARIANT
#error "define FERRY_TEST_VARIANT"
#endif

typedef struct test_instance {
  const ferry_host_api* host;
  float factor;
  char mode[32];
} test_instance;

static const int64_t kRowShape[] = {-1, 2};
static const int64_t kBadBatchShape[] = {2, -1};
static const int64_t kDynamicShape[] = {-1, -1};
static const int64_t kVectorShape[] = {-1};

static const ferry_tensor_decl kInputs[] = {
#if FERRY_TEST_VARIANT == BAD_DTYPE
    {"x", "FLOAT99", kRowShape, 2},
#elif FERRY_TEST_VARIANT == BAD_BATCH
    {"x", "FP32", kBadBatchShape, 2},
#elif FERRY_TEST_VARIANT == WIDE
    {"x", "FP32", kDynamicShape, 2},
#elif FERRY_TEST_VARIANT == DUP_NAMES
    {"x", "FP32", kRowShape, 2},
    {"x", "FP32", kRowShape, 2},
#else
    {"x", "FP32", kRowShape, 2},
#endif
};

static const ferry_tensor_decl kOutputs[] = {
#if FERRY_TEST_VARIANT == DYNAMIC || FERRY_TEST_VARIANT == WIDE
    {"y", "FP32", kDynamicShape, 2},
    {"s", "BYTES", kVectorShape, 1},
#else
    {"y", "FP32", kRowShape, 2},
#endif
};

static ferry_error* Create(const ferry_host_api* host, const char* config_json,
                           const ferry_device* device, ferry_instance** instance) {
  const char* factor;
  const char* modes[] = {"wrong_rows", "wrong_bytes", "no_alloc", "bad_bytes"};
  size_t i;
  test_instance* t;
  (void)device;
  if (strstr(config_json, "fail_create") != NULL) {
    return host->error_new("config asks create to fail");
  }
  t = (test_instance*)calloc(1, sizeof(test_instance));
  if (t == NULL) return host->error_new("out of memory");
  t->host = host;
  t->factor = 2.0f;
  factor = strstr(config_json, "\"factor\":");
  if (factor != NULL) t->factor = strtof(factor + strlen("\"factor\":"), NULL);
  for (i = 0; i < sizeof(modes) / sizeof(modes[0]); ++i) {
    if (strstr(config_json, modes[i]) != NULL) strcpy(t->mode, modes[i]);
  }
  *instance = (ferry_instance*)t;
  return NULL;
}

static void PutLength(unsigned char* p, uint32_t n) {
  p[0] = (unsigned char)(n & 0xff);
  p[1] = (unsigned char)((n >> 8) & 0xff);
  p[2] = (unsigned char)((n >> 16) & 0xff);
  p[3] = (unsigned char)((n >> 24) & 0xff);
}

static ferry_error* Execute(ferry_instance* instance, const ferry_batch* batch) {
  test_instance* t = (test_instance*)instance;
  const float* x = (const float*)batch->inputs[0].data;
  const int64_t width = batch->inputs[0].shape[1];
  float* y;
  int64_t r, row = 0;
  uint32_t item;
  if (batch->rows > 0 && x[0] == 999.0f) return t->host->error_new("the batch holds 999");
#if FERRY_TEST_VARIANT == DYNAMIC || FERRY_TEST_VARIANT == WIDE
  {
    int64_t shape[2];
    unsigned char* s;
    ferry_error* e;
    uint64_t bytes;
    shape[0] = batch->rows + (strcmp(t->mode, "wrong_rows") == 0 ? 1 : 0);
    shape[1] = width;
    bytes = (uint64_t)(shape[0] * width * 4) + (strcmp(t->mode, "wrong_bytes") == 0 ? 4 : 0);
    if (strcmp(t->mode, "no_alloc") == 0) return NULL;
    /* A careless function that ignores the error: the agent fails the batch anyway. */
    e = t->host->allocate_output(batch, 0, shape, 2, bytes);
    if (e != NULL) return NULL;
    y = (float*)batch->outputs[0].data;
    for (r = 0; r < batch->rows * width; ++r) y[r] = t->factor * x[r];
    shape[0] = batch->rows;
    e = t->host->allocate_output(batch, 1, shape, 1, (uint64_t)(batch->rows * 6));
    if (e != NULL) return e;
    s = (unsigned char*)batch->outputs[1].data;
    for (r = 0; r < batch->rows; ++r) {
      PutLength(s + 6 * r, strcmp(t->mode, "bad_bytes") == 0 ? 1000u : 2u);
      s[6 * r + 4] = 'o';
      s[6 * r + 5] = 'k';
    }
  }
#else
  y = (float*)batch->outputs[0].data;
  for (r = 0; r < batch->rows * 2; ++r) y[r] = t->factor * x[r];
#endif
  for (item = 0; item < batch->num_items; ++item) {
    for (r = row; r < row + batch->item_rows[item]; ++r) {
      if (x[width * r] == -1.0f && batch->item_errors[item] == NULL) {
        batch->item_errors[item] = t->host->error_new("x[0] is -1 in this request");
      }
    }
    row += batch->item_rows[item];
  }
  return NULL;
}

static void Destroy(ferry_instance* instance) { free(instance); }

static const ferry_function_v1 kFunction = {sizeof(ferry_function_v1),
#if FERRY_TEST_VARIANT == ABI_MAJOR
                                            FERRY_FUNCTION_ABI_MAJOR + 1,
#else
                                            FERRY_FUNCTION_ABI_MAJOR,
#endif
#if FERRY_TEST_VARIANT == ABI_MINOR
                                            FERRY_FUNCTION_ABI_MINOR + 1,
#else
                                            FERRY_FUNCTION_ABI_MINOR,
#endif
                                            "test",
                                            "1.0",
#if FERRY_TEST_VARIANT == GPU
                                            FERRY_DEVICE_GPU,
#else
                                            FERRY_DEVICE_CPU,
#endif
                                            kInputs,
                                            sizeof(kInputs) / sizeof(kInputs[0]),
                                            kOutputs,
                                            sizeof(kOutputs) / sizeof(kOutputs[0]),
                                            Create,
                                            Execute,
                                            Destroy};

#if FERRY_TEST_VARIANT == NO_ENTRY
FERRY_FUNCTION_EXPORT const ferry_function_v1* ferry_function_entri(uint32_t major, uint32_t minor);
const ferry_function_v1* ferry_function_entri(uint32_t major, uint32_t minor) {
#else
const ferry_function_v1* ferry_function_entry(uint32_t major, uint32_t minor) {
#endif
  (void)major;
  (void)minor;
  return &kFunction;
}
