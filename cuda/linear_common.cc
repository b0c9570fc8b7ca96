// The parts of linear.h that need no GPU: precision names, tolerances and layer-chain checks.
// Compiled in every build.
#include <algorithm>
#include <climits>
#include <cmath>
#include <utility>

#include "absl/strings/str_cat.h"
#include "cuda/linear.h"

namespace ferry::cuda {
namespace {

constexpr std::pair<std::string_view, Precision> kPrecisions[] = {
    {"fp32", Precision::kFp32},
    {"tf32", Precision::kTf32},
    {"bf16", Precision::kBf16},
    {"fp16", Precision::kFp16},
};

}  // namespace

std::string_view PrecisionName(Precision p) {
  for (const auto& [name, value] : kPrecisions) {
    if (value == p) return name;
  }
  return "fp32";
}

bool PrecisionFromName(std::string_view name, Precision* out) {
  for (const auto& [n, value] : kPrecisions) {
    if (n == name) {
      *out = value;
      return true;
    }
  }
  return false;
}

Tolerance PrecisionTolerance(Precision p, int64_t k) {
  // Unit roundoff of the format the GEMM inputs are rounded to.
  double u = std::ldexp(1.0, -24);
  switch (p) {
    case Precision::kFp32:
      break;
    case Precision::kTf32:
      // Tensor cores may truncate FP32 inputs to TF32 (the mma instruction ignores the low 13
      // mantissa bits) rather than round them: a relative error of up to 2^-10, not 2^-11.
      u = std::ldexp(1.0, -10);
      break;
    case Precision::kFp16:
      u = std::ldexp(1.0, -11);  // ferry's conversion rounds to nearest even
      break;
    case Precision::kBf16:
      u = std::ldexp(1.0, -9);
      break;
  }
  // Two roundings per product (w and x), then FP32 accumulation of k terms plus the bias, and
  // FP32 rounding of the result. The atol covers outputs that cancel to ~0.
  const double accumulate = static_cast<double>(std::max<int64_t>(k, 1) + 2) * std::ldexp(1.0, -24);
  return {.atol = 1e-6, .rtol = 2.0 * u + u * u + accumulate};
}

absl::Status ValidateLinearChain(const std::vector<LinearSpec>& layers) {
  if (layers.empty()) return absl::InvalidArgumentError("linear: no layers");
  for (size_t i = 0; i < layers.size(); ++i) {
    const LinearSpec& l = layers[i];
    if (l.in <= 0 || l.out <= 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("linear: layer ", i, " has bad shape in=", l.in, " out=", l.out));
    }
    // cuBLAS takes int dimensions and leading dimensions.
    if (l.in > INT_MAX || l.out > INT_MAX) {
      return absl::InvalidArgumentError(absl::StrCat(
          "linear: layer ", i, " is too large for cuBLAS (in=", l.in, " out=", l.out, ")"));
    }
    if (static_cast<int64_t>(l.weight.size()) != l.in * l.out) {
      return absl::InvalidArgumentError(absl::StrCat("linear: layer ", i, " weight has ",
                                                     l.weight.size(), " floats, expected ",
                                                     l.in * l.out, " (out x in)"));
    }
    if (!l.bias.empty() && static_cast<int64_t>(l.bias.size()) != l.out) {
      return absl::InvalidArgumentError(absl::StrCat("linear: layer ", i, " bias has ",
                                                     l.bias.size(), " floats, expected ", l.out));
    }
    if (i > 0 && layers[i - 1].out != l.in) {
      return absl::InvalidArgumentError(absl::StrCat("linear: layer ", i, " takes ", l.in,
                                                     " inputs but layer ", i - 1, " gives ",
                                                     layers[i - 1].out));
    }
  }
  return absl::OkStatus();
}

}  // namespace ferry::cuda
