// ferry's C++ client: the data plane of a node agent or of the gateway (KServe v2 over HTTP with
// JSON or the binary tensor extension, KServe v2 over gRPC, Clipper predict, health, metadata)
// and the control plane (ferry.control.v1: apply, get, delete).
//
//   auto client = ferry::Client::Create({.http_address = "127.0.0.1:8000",
//                                        .grpc_address = "127.0.0.1:8001"});
//   ferry::InferenceRequest req{.model_name = "echo", .inputs = {...}};
//   auto res = (*client)->Infer(req, ferry::InferProtocol::kHttpBinary);
//
// Load generators encode a request once (EncodeHttpInfer / EncodeGrpcInfer) and send the same
// bytes many times (SendRaw / SendGrpcRaw), so that what they time is the round trip, not the
// encoding.
//
// Errors are absl::Status. Server answers map to codes by HTTP status: 400 InvalidArgument,
// 404 NotFound, 429 ResourceExhausted (overload: retry later), 503 Unavailable, 504
// DeadlineExceeded, 500 Internal (see StatusFromHttp); gRPC codes pass through unchanged. The
// message is the server's own error text. Transport failures are Unavailable (cannot connect,
// connection lost) or DeadlineExceeded (timeout_ms passed).
#ifndef FERRY_CLIENT_H_
#define FERRY_CLIENT_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "ferry/inference.h"
#include "ferry/signature.h"
#include "ferry_control.grpc.pb.h"
#include "kserve_inference.grpc.pb.h"
#include "nlohmann/json.hpp"

namespace ferry {

struct ClientOptions {
  // Data-plane HTTP: "host:port" or "http://host:port" (a path is ignored). Empty: the HTTP
  // calls answer FailedPrecondition.
  std::string http_address;
  // Data-plane gRPC (inference.GRPCInferenceService): "host:port". Empty: no gRPC data plane.
  std::string grpc_address;
  // Control plane (ferry.control.v1.ControlPlane): "host:port". Empty: no control calls.
  std::string control_address;
  // Bearer token sent as "authorization: Bearer <token>" on control calls (ferry-control
  // --admin-token-file). Empty: none sent.
  std::string admin_token;
  // Establishing a TCP connection (HTTP).
  int64_t connect_timeout_ms = 5'000;
  // One whole call: HTTP write + read of the response, or the gRPC deadline. The server also
  // learns a gRPC deadline and sheds a request it cannot answer in time.
  int64_t timeout_ms = 10'000;
  // Larger HTTP response bodies fail the call (ResourceExhausted) and close the connection.
  int64_t max_response_bytes = int64_t{64} << 20;
  // Largest gRPC message sent or received.
  int64_t max_grpc_message_bytes = int64_t{64} << 20;
};

enum class InferProtocol {
  kHttpJson,    // KServe v2 JSON: tensors as JSON arrays both ways
  kHttpBinary,  // binary tensor extension: inputs raw after the JSON header, outputs raw too
  kGrpc,        // inference.GRPCInferenceService/ModelInfer with raw_input_contents
};

// A complete HTTP request body, encoded once and sendable any number of times (immutable).
struct HttpRequest {
  std::string method = "POST";
  std::string target;        // e.g. "/v2/models/echo/infer"
  std::string content_type;  // "application/json" or "application/octet-stream"
  // Inference-Header-Content-Length: the JSON part's length in `body`; -1 = no such header.
  int64_t header_length = -1;
  std::string body;
};

// An HTTP answer, whatever its status.
struct HttpReply {
  int status = 0;
  std::string content_type;
  int64_t header_length = -1;  // the response's Inference-Header-Content-Length; -1 = absent
  std::string body;
};

// Model metadata as the server reports it (a batched model's leading dim is -1).
struct ModelInfo {
  std::string name;
  std::vector<std::string> versions;
  std::string platform;
  std::vector<TensorSpec> inputs;
  std::vector<TensorSpec> outputs;
};

// One manifest file for Apply: `path` is how errors name it and what relative paths in it
// resolve against (send absolute paths), `content` YAML or JSON, possibly several documents.
struct ManifestText {
  std::string path;
  std::string content;
};

// --- Encoding and decoding (pure functions; thread-safe) ------------------------------------

// POST /v2/models/{m}[/versions/{v}]/infer. kHttpJson: every input as JSON data; kHttpBinary:
// every input in the binary part and every output asked binary (the request's own
// RequestedOutput::binary_data / binary_data_output are kept in JSON). The request's
// priority / timeout_us (when non-zero) travel as the reserved parameters "priority" and
// "timeout". InvalidArgument for a tensor whose payload does not match its dtype and shape, or
// a datatype JSON cannot carry (FP16/BF16: use binary).
absl::StatusOr<HttpRequest> EncodeHttpInfer(const InferenceRequest& request,
                                            InferProtocol protocol);
// POST /{model}/predict with the given JSON body ({"input": ...} or {"input_batch": [...]}).
HttpRequest EncodePredict(std::string_view model, std::string_view json_body);
// The gRPC ModelInferRequest (inputs in raw_input_contents). InvalidArgument as above.
absl::StatusOr<inference::ModelInferRequest> EncodeGrpcInfer(const InferenceRequest& request);

// A 2xx infer answer (JSON, or JSON + binary outputs) into a response; InvalidArgument when
// it is malformed. A non-2xx reply gives StatusFromHttp's status.
absl::StatusOr<InferenceResponse> DecodeHttpInfer(const HttpReply& reply);
absl::StatusOr<InferenceResponse> DecodeGrpcInfer(const inference::ModelInferResponse& reply);

// A model name or version percent-encoded for a URL path (RFC 3986 unreserved characters kept).
std::string EscapePathSegment(std::string_view segment);

// OK for 2xx; otherwise the code for the HTTP status (400 InvalidArgument, 401
// Unauthenticated, 403 PermissionDenied, 404 NotFound, 405/501 Unimplemented, 413/431
// InvalidArgument, 429 ResourceExhausted, 500 Internal, 502/503 Unavailable, 504
// DeadlineExceeded, other 4xx InvalidArgument, other 5xx Internal) with the server's message
// (the "error" field of a JSON body, else the body) and the HTTP status as the payload
// kHttpStatusPayload (decimal text).
absl::Status StatusFromHttp(int http_status, std::string_view body);
inline constexpr char kHttpStatusPayload[] = "ferry.dev/http-status";
// The HTTP status StatusFromHttp recorded in `status`, or 0.
int HttpStatusOf(const absl::Status& status);
// True for the codes a caller may retry later: ResourceExhausted (overload) and Unavailable.
bool IsRetryable(const absl::Status& status);

// --- The client -------------------------------------------------------------------------------

// One Client holds one persistent keep-alive HTTP/1.1 connection (opened on first use, opened
// again transparently when the server has closed it) and one gRPC channel per configured gRPC
// address.
//
// Thread-safety: every method may be called from any thread. HTTP calls of one Client are
// serialised on its one connection (a mutex; one request at a time, as HTTP/1.1 without
// pipelining allows), so for concurrent HTTP load use one Client per thread. gRPC calls run
// concurrently on the shared channel. Every call blocks until answered or timeout_ms passes.
class Client {
 public:
  // Checks the addresses (InvalidArgument); connects lazily, so a server that is not up yet is
  // not an error here.
  static absl::StatusOr<std::unique_ptr<Client>> Create(const ClientOptions& options);
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  const ClientOptions& options() const { return options_; }

  // Data plane. `protocol` picks the wire; the outputs are the same whichever is used.
  absl::StatusOr<InferenceResponse> Infer(const InferenceRequest& request,
                                          InferProtocol protocol = InferProtocol::kHttpJson);
  // Clipper predict: POST /{model}/predict; the answer's JSON. Errors as StatusFromHttp.
  absl::StatusOr<nlohmann::json> Predict(std::string_view model, const nlohmann::json& body);
  absl::StatusOr<ModelInfo> ModelMetadata(std::string_view model, std::string_view version = "",
                                          bool use_grpc = false);
  // true/false for a known model; NotFound for an unknown one.
  absl::StatusOr<bool> ModelReady(std::string_view model, std::string_view version = "",
                                  bool use_grpc = false);
  absl::StatusOr<bool> ServerLive(bool use_grpc = false);
  absl::StatusOr<bool> ServerReady(bool use_grpc = false);

  // Pre-encoded sending. SendRaw returns any HTTP answer (the status is the caller's to judge;
  // StatusFromHttp maps it); its error is a transport failure only. A request written on a
  // kept-alive connection that the server had closed before answering is sent once more on a
  // fresh connection (inference is treated as idempotent); nothing is resent once any byte of
  // the answer has arrived.
  absl::StatusOr<HttpReply> SendRaw(const HttpRequest& request);
  absl::StatusOr<inference::ModelInferResponse> SendGrpcRaw(
      const inference::ModelInferRequest& request);

  // Control plane (ferry.control.v1). Errors: gRPC's code and the server's message
  // (InvalidArgument naming file and field for a bad manifest, NotFound, Unauthenticated).
  absl::StatusOr<control::v1::ApplyResponse> Apply(const std::vector<ManifestText>& files,
                                                   bool dry_run = false);
  absl::StatusOr<control::v1::ListFunctionsResponse> ListFunctions();
  absl::StatusOr<control::v1::FunctionStatus> GetFunction(std::string_view name);
  absl::StatusOr<control::v1::ListNodesResponse> ListNodes();
  // The function's replicas (pending ones included, node_id empty).
  absl::StatusOr<std::vector<control::v1::Replica>> ListReplicas(std::string_view function);
  absl::StatusOr<control::v1::GetRoutesResponse> GetRoutes(std::string_view function = "");
  absl::StatusOr<control::v1::DeleteFunctionResponse> DeleteFunction(std::string_view name);

  // For control RPCs this client does not wrap: the stub (nullptr without control_address;
  // owned by the client, thread-safe) and a context carrying the deadline and admin token.
  control::v1::ControlPlane::Stub* control_stub() const { return control_.get(); }
  std::unique_ptr<grpc::ClientContext> NewControlContext() const;

  // TCP connections the HTTP side has opened so far (1 while keep-alive holds).
  int64_t http_connections_opened() const;

 private:
  class HttpConnection;
  explicit Client(const ClientOptions& options);
  absl::StatusOr<HttpReply> Get(std::string target);
  std::unique_ptr<grpc::ClientContext> DataContext() const;
  absl::Status NeedGrpc() const;
  absl::Status NeedControl() const;

  const ClientOptions options_;
  mutable absl::Mutex http_mu_;
  std::unique_ptr<HttpConnection> http_ ABSL_GUARDED_BY(http_mu_);
  std::unique_ptr<inference::GRPCInferenceService::Stub> grpc_;
  std::unique_ptr<control::v1::ControlPlane::Stub> control_;
  std::atomic<int64_t> http_connections_opened_{0};
};

}  // namespace ferry

#endif  // FERRY_CLIENT_H_
