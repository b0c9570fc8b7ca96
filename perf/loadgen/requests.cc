#include "perf/loadgen/requests.h"

#include <cstdint>

#include "absl/strings/str_cat.h"
#include "ferry/client.h"
#include "ferry/inference.h"
#include "ferry/tensor.h"
#include "kserve_inference.pb.h"
#include "nlohmann/json.hpp"

namespace ferry::loadgen {

const std::vector<std::string>& WordfilterMessages() {
  static const auto* kMessages = new std::vector<std::string>{
      "hey, are we still meeting for lunch tomorrow at noon?",
      "that darn printer jammed again and ate my report",
      "Running late, traffic on the bridge is a total mess",
      "what the heck happened to the build last night",
      "Thanks for the help earlier, really appreciated it!",
      "drat, I forgot my badge at home again",
      "can you send me the slides from this morning's talk",
      "this blasted laptop will not connect to the wifi",
      "Happy birthday! Hope you have a great day",
      "the quarterly numbers look good, see the attached sheet",
  };
  return *kMessages;
}

std::vector<std::string> RequestElements(const Options& o) {
  if (o.workload == WorkloadKind::kMlp) return {};
  if (o.workload == WorkloadKind::kEcho) return {std::string(o.payload_bytes, 'x')};
  std::vector<std::string> out;
  const auto& messages = WordfilterMessages();
  for (int i = 0; i < o.docs; ++i) out.push_back(messages[i % messages.size()]);
  return out;
}

std::vector<float> MlpValues(const Options& o) {
  const int64_t n = static_cast<int64_t>(o.rows) * o.features;
  std::vector<float> values(static_cast<size_t>(n));
  // Multiples of 1/128 (exact in binary and in JSON's shortest decimal form).
  for (int64_t i = 0; i < n; ++i) values[i] = static_cast<float>((i * 37) % 256 - 128) / 128.0f;
  return values;
}

namespace {

// The KServe v2 request of these options, for ferry::Client's encoders.
InferenceRequest MakeInferenceRequest(const Options& o) {
  if (o.workload == WorkloadKind::kMlp) {
    std::vector<float> values = MlpValues(o);
    Tensor input{.name = o.input, .dtype = DataType::kFp32, .shape = {o.rows, o.features}};
    input.data.assign(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(float));
    return InferenceRequest{.model_name = o.model, .inputs = {std::move(input)}};
  }
  std::vector<std::string> elements = RequestElements(o);
  const int64_t n = static_cast<int64_t>(elements.size());
  Tensor input{.name = o.input,
               .dtype = DataType::kBytes,
               .shape = o.batch_dim ? std::vector<int64_t>{1, n} : std::vector<int64_t>{n}};
  input.bytes = BytesList(elements);
  return InferenceRequest{.model_name = o.model, .inputs = {std::move(input)}};
}

// ferry::HttpRequest framed as HTTP/1.1 wire bytes (ferry::Client frames it inside SendRaw,
// which is synchronous; see http_driver.cc for why the transport is ours).
std::string Frame(const Options& o, const HttpRequest& r) {
  std::string extra;
  if (r.header_length >= 0) {
    extra = absl::StrCat("Inference-Header-Content-Length: ", r.header_length, "\r\n");
  }
  return absl::StrCat(r.method, " ", r.target, " HTTP/1.1\r\nHost: ", o.host, ":", o.port,
                      "\r\nContent-Type: ", r.content_type, "\r\n", extra,
                      "Content-Length: ", r.body.size(), "\r\n\r\n", r.body);
}

}  // namespace

absl::StatusOr<std::string> EncodeHttpRequest(const Options& o) {
  switch (o.protocol) {
    case Protocol::kJson:
    case Protocol::kBinary: {
      absl::StatusOr<HttpRequest> r = EncodeHttpInfer(
          MakeInferenceRequest(o),
          o.protocol == Protocol::kJson ? InferProtocol::kHttpJson : InferProtocol::kHttpBinary);
      if (!r.ok()) return r.status();
      return Frame(o, *r);
    }
    case Protocol::kClipper: {
      if (o.workload == WorkloadKind::kMlp) {
        return absl::InvalidArgumentError("the mlp workload has no Clipper form");
      }
      std::vector<std::string> elements = RequestElements(o);
      nlohmann::json doc;
      if (elements.size() == 1) {
        doc = {{"input", elements[0]}};
      } else {
        doc = {{"input_batch", elements}};
      }
      return Frame(o, EncodePredict(o.model, doc.dump()));
    }
    case Protocol::kGrpc:
      break;
  }
  return absl::InvalidArgumentError("gRPC requests are not HTTP");
}

absl::StatusOr<std::string> EncodeGrpcRequest(const Options& o) {
  absl::StatusOr<inference::ModelInferRequest> r = EncodeGrpcInfer(MakeInferenceRequest(o));
  if (!r.ok()) return r.status();
  return r->SerializeAsString();
}

absl::Status CheckAnswer(const Options& o, absl::string_view body) {
  absl::string_view want;
  absl::string_view what;
  std::string payload;
  switch (o.workload) {
    case WorkloadKind::kEcho:
      payload = std::string(o.payload_bytes, 'x');
      want = payload;
      what = "echoed payload";
      break;
    case WorkloadKind::kWordfilter:
      want = "****";
      what = "masked word";
      break;
    case WorkloadKind::kMlp:
      // JSON and the binary extension's header name the datatype; so does the gRPC answer.
      want = "FP32";
      what = "FP32 output";
      break;
  }
  if (body.find(want) == absl::string_view::npos) {
    return absl::DataLossError(absl::StrCat("the answer does not hold the expected ", what,
                                            "; its first bytes: ", body.substr(0, 300)));
  }
  return absl::OkStatus();
}

}  // namespace ferry::loadgen
