// Model signatures the protocol fuzz targets decode against: one per shape of problem the front
// ends care about (BYTES rows, a wide FP32 row, several inputs of integer types with a variable
// inner dim, an unbatched model). Also the checks a decoded request goes through next in the
// agent, so that a fuzz target exercises what a request that passed the decoder meets.
#ifndef FERRY_TESTS_FUZZ_FUZZ_MODELS_H_
#define FERRY_TESTS_FUZZ_FUZZ_MODELS_H_

#include <string>
#include <utility>
#include <vector>

#include "ferry/inference.h"
#include "ferry/signature.h"
#include "node-agent/serving_core.h"

namespace ferry::fuzz {

struct FuzzModel {
  ModelSignature signature;
  agent::ModelMetadata metadata;
};

inline FuzzModel MakeFuzzModel(std::string name, ModelSignature signature, int64_t max_batch_size) {
  FuzzModel model;
  model.metadata.name = std::move(name);
  model.metadata.versions = {"1"};
  model.metadata.platform = signature.platform;
  model.metadata.inputs = signature.inputs;
  model.metadata.outputs = signature.outputs;
  model.metadata.max_batch_size = max_batch_size;
  model.metadata.batched = signature.batched;
  model.signature = std::move(signature);
  return model;
}

// Built once; read-only afterwards.
inline const std::vector<FuzzModel>& FuzzModels() {
  static const auto* models = [] {
    auto* out = new std::vector<FuzzModel>;
    out->push_back(MakeFuzzModel("echo",
                                 ModelSignature{"ferry_echo",
                                                {TensorSpec{"text", DataType::kBytes, {-1}}},
                                                {TensorSpec{"text", DataType::kBytes, {-1}}},
                                                true},
                                 32));
    out->push_back(MakeFuzzModel("mlp",
                                 ModelSignature{"ferry_mlp",
                                                {TensorSpec{"x", DataType::kFp32, {-1, 64}}},
                                                {TensorSpec{"y", DataType::kFp32, {-1, 10}}},
                                                true},
                                 64));
    out->push_back(MakeFuzzModel("ints",
                                 ModelSignature{"ferry_echo",
                                                {TensorSpec{"a", DataType::kInt32, {-1, 2, -1}},
                                                 TensorSpec{"b", DataType::kInt64, {-1}}},
                                                {TensorSpec{"a", DataType::kInt32, {-1, 2, -1}}},
                                                true},
                                 8));
    out->push_back(MakeFuzzModel("fixed",
                                 ModelSignature{"ferry_echo",
                                                {TensorSpec{"x", DataType::kFp16, {2, 3}}},
                                                {TensorSpec{"x", DataType::kFp16, {2, 3}}},
                                                false},
                                 0));
    out->push_back(MakeFuzzModel("pairs",
                                 ModelSignature{"ferry_echo",
                                                {TensorSpec{"p", DataType::kBytes, {-1, 2}}},
                                                {TensorSpec{"p", DataType::kBytes, {-1, 2}}},
                                                true},
                                 16));
    return out;
  }();
  return *models;
}

// What a front end answers for a request the model accepted: the inputs echoed as outputs.
inline InferenceResponse EchoResponse(const InferenceRequest& request) {
  InferenceResponse response;
  response.model_name = request.model_name;
  response.model_version = request.model_version;
  response.id = request.id;
  response.parameters = request.parameters;
  response.outputs = request.inputs;
  return response;
}

}  // namespace ferry::fuzz

#endif  // FERRY_TESTS_FUZZ_FUZZ_MODELS_H_
