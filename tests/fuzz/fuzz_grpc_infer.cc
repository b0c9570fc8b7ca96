// gRPC ModelInferRequest messages as the gRPC front end decodes them (protobuf parse, then
// FromProto into a ferry::InferenceRequest), then validation against each model and, when
// valid, encoding of an echoed response.
#include <google/protobuf/stubs/logging.h>

#include <cstddef>
#include <cstdint>

#include "ferry/signature.h"
#include "kserve_inference.pb.h"
#include "node-agent/grpc_server.h"
#include "tests/fuzz/fuzz_models.h"

extern "C" int LLVMFuzzerInitialize(int* /*argc*/, char*** /*argv*/) {
  // Parse errors (e.g. invalid UTF-8 in a string field) are expected here; logging each one
  // would make the output unreadable and the target slow.
  google::protobuf::SetLogHandler(nullptr);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  inference::ModelInferRequest proto;
  if (!proto.ParseFromArray(data, static_cast<int>(size))) return 0;
  auto request = ferry::agent::FromProto(&proto);
  if (!request.ok()) return 0;
  for (const auto& model : ferry::fuzz::FuzzModels()) {
    if (!ferry::ValidateRequest(model.signature, *request).ok()) continue;
    inference::ModelInferResponse response;
    ferry::agent::ToProto(ferry::fuzz::EchoResponse(*request), &response);
    (void)response.ByteSizeLong();
  }
  return 0;
}
