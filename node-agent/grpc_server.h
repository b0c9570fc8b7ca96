// The node agent's gRPC front end: the KServe v2 `inference.GRPCInferenceService` (the wire
// tritonclient.grpc speaks) plus `grpc.health.v1.Health`. It only translates between protobuf
// and ferry::InferenceRequest / InferenceResponse; validation, batching and model state live in
// the ServingCore.
#ifndef FERRY_NODE_AGENT_GRPC_SERVER_H_
#define FERRY_NODE_AGENT_GRPC_SERVER_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "ferry/inference.h"
#include "kserve_inference.pb.h"
#include "node-agent/byte_budget.h"
#include "node-agent/serving_core.h"

namespace grpc {
class Server;
}  // namespace grpc

namespace ferry::agent {

struct GrpcServerOptions {
  // Address to listen on; an IPv6 literal may be given with or without brackets.
  std::string host = "127.0.0.1";
  int port = 8001;  // 0 = ephemeral; see GrpcServer::port()
  // Largest request and response message accepted / sent (gRPC's own default is 4 MiB).
  int64_t max_message_bytes = 64 << 20;
  // Request bytes in flight, shared with the HTTP server; not owned, must outlive the server.
  // A ModelInfer message is charged its size until the call is done; one that does not fit is
  // answered RESOURCE_EXHAUSTED at once. nullptr: no budget.
  ByteBudget* byte_budget = nullptr;
  // Concurrent calls on one HTTP/2 connection.
  int max_concurrent_streams = 1000;
  // The server pings a connection idle this long, and closes it when the ping is not answered
  // within keepalive_timeout_ms.
  int64_t keepalive_time_ms = 60'000;
  int64_t keepalive_timeout_ms = 20'000;
  // Client pings closer together than this are strikes; two strikes close the connection.
  int64_t min_client_ping_interval_ms = 10'000;
};

// OK, or InvalidArgument naming the first option out of range.
absl::Status ValidateGrpcServerOptions(const GrpcServerOptions& options);

class GrpcInferenceServiceImpl;

// Serves inference RPCs on gRPC's callback threads: ModelInfer hands the request to
// ServingCore::Infer and returns without holding a thread; the response is sent from whichever
// thread completes the request. Every handler is an error boundary: an exception answers
// INTERNAL with its message. Thread-safe.
class GrpcServer {
 public:
  // Builds and starts the server. `core` is not owned and must outlive the server.
  // InvalidArgument for bad options; Unavailable when the address cannot be bound (the port is
  // bound exclusively: no SO_REUSEPORT sharing with another process).
  static absl::StatusOr<std::unique_ptr<GrpcServer>> Create(const GrpcServerOptions& options,
                                                            ServingCore* core);

  // Calls Shutdown().
  ~GrpcServer();

  GrpcServer(const GrpcServer&) = delete;
  GrpcServer& operator=(const GrpcServer&) = delete;

  // The bound port (the chosen one when options.port was 0).
  int port() const { return port_; }

  // Marks grpc.health.v1 NOT_SERVING, stops accepting RPCs and waits up to `deadline_ms` for
  // in-flight ones to finish; those still running then are cancelled (their clients see
  // CANCELLED). Blocks until the server has stopped. Idempotent.
  void Shutdown(int64_t deadline_ms = 5000);

 private:
  GrpcServer();

  int port_ = 0;
  std::unique_ptr<GrpcInferenceServiceImpl> service_;
  absl::Mutex mu_;
  std::unique_ptr<grpc::Server> server_ ABSL_GUARDED_BY(mu_);
};

// Wire translation, exposed for tests.

// Decodes a ModelInferRequest: model name/version/id, parameters (uint64 values above int64's
// range are rejected), the reserved "priority" and "timeout" (int64 >= 0; consumed, not left in
// `parameters`), inputs from raw_input_contents or from typed contents (never both), and the
// requested outputs. Moves raw_input_contents out of *proto to avoid copying tensor data.
// InvalidArgument names the offending input or parameter. Does not set arrival_us.
// `metadata`: the target model; each input's header (name, datatype, shape, batch dim against
// maxBatchSize, byte size without overflow) is checked against it before its contents are
// decoded. nullptr skips only the checks that need the model (overflow checks always run).
absl::StatusOr<InferenceRequest> FromProto(inference::ModelInferRequest* proto,
                                           const ModelMetadata* metadata = nullptr);

// Encodes a response, moving tensor data: each output's data goes to raw_output_contents in
// output order (BYTES elements 4-byte length-prefixed); is_default becomes the bool parameter
// "ferry_default".
void ToProto(InferenceResponse response, inference::ModelInferResponse* proto);

}  // namespace ferry::agent

#endif  // FERRY_NODE_AGENT_GRPC_SERVER_H_
