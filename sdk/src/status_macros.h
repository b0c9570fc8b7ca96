// Early-return macros for absl::Status / absl::StatusOr, private to the SDK's manifest parsing
// (yaml_to_json.cc, manifest.cc). Debian's abseil does not ship absl/status/status_macros.h.
#ifndef FERRY_SDK_SRC_STATUS_MACROS_H_
#define FERRY_SDK_SRC_STATUS_MACROS_H_

#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define FERRY_MANIFEST_RETURN_IF_ERROR(expr) \
  do {                                       \
    absl::Status _st = (expr);               \
    if (!_st.ok()) return _st;               \
  } while (0)

#define FERRY_MANIFEST_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                                         \
  if (!tmp.ok()) return tmp.status();                        \
  lhs = std::move(*tmp)
#define FERRY_MANIFEST_CONCAT_INNER(a, b) a##b
#define FERRY_MANIFEST_CONCAT(a, b) FERRY_MANIFEST_CONCAT_INNER(a, b)
#define FERRY_MANIFEST_ASSIGN_OR_RETURN(lhs, expr) \
  FERRY_MANIFEST_ASSIGN_OR_RETURN_IMPL(FERRY_MANIFEST_CONCAT(_status_or_, __LINE__), lhs, expr)

#endif  // FERRY_SDK_SRC_STATUS_MACROS_H_
