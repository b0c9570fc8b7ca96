// Manifests as the control plane stores and ships them.
//
// Canonical form: one JSON Function document with the SLO inline and the model URI absolute,
// produced from a validated FunctionSpec; parsing it with ferry::ParseManifests gives the same
// spec back. It is what the state store keeps and what agents receive, so neither needs the
// user's files (SLO files, relative paths) again.
#ifndef FERRY_CONTROL_PLANE_MANIFEST_CODEC_H_
#define FERRY_CONTROL_PLANE_MANIFEST_CODEC_H_

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "ferry/manifest.h"

namespace ferry::control {

std::string CanonicalManifest(const FunctionSpec& spec);

// Parses a canonical manifest (exactly one Function document).
absl::StatusOr<FunctionSpec> ParseCanonicalManifest(std::string_view text, std::string_view source,
                                                    std::string_view base_dir);

struct ManifestFileInput {
  std::string path;  // as the user named it
  std::string content;
};

// Validates the files of one apply with the SDK parser. All-or-nothing: the first error is
// returned (InvalidArgument naming file, document and field path). spec.slo.file references are
// resolved among `files` only (relative to the referencing file's folder), never on this
// machine's disk; model URIs and base_dir resolve against the folder of `path`. Function names
// must be unique across the files, and there must be at least one Function.
absl::StatusOr<std::vector<FunctionSpec>> ParseApplyFiles(
    const std::vector<ManifestFileInput>& files);

}  // namespace ferry::control

#endif  // FERRY_CONTROL_PLANE_MANIFEST_CODEC_H_
