// ferry::Client against a real agent in this process (the serving core with its HTTP and gRPC
// front ends on loopback ports) and a real ferry-control service: the three infer protocols
// agree, Clipper predict, metadata and health, error mapping with the server's own messages,
// overload, reconnection, and apply / get / delete.
#include "ferry/client.h"

#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "control-plane/controller.h"
#include "control-plane/service.h"
#include "control-plane/sqlite_state_store.h"
#include "ferry/manifest.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "node-agent/grpc_server.h"
#include "node-agent/http_server.h"
#include "node-agent/serving_core_impl.h"

namespace ferry {
namespace {

using nlohmann::json;

constexpr char kFunctions[] = R"(
apiVersion: ferry.dev/v1
kind: Function
metadata: {name: echo}
spec:
  runtime: echo
  batching: {maxBatchSize: 8, maxQueueDelayMicros: 0, policy: off}
---
apiVersion: ferry.dev/v1
kind: Function
metadata: {name: echo-f32}
spec:
  runtime: echo
  config: {datatype: FP32, shape: [2]}
  batching: {maxBatchSize: 8, maxQueueDelayMicros: 0, policy: off}
---
apiVersion: ferry.dev/v1
kind: Function
metadata: {name: echo-i32}
spec:
  runtime: echo
  config: {datatype: INT32, shape: [], inputName: x, outputName: y}
  batching: {maxBatchSize: 8, maxQueueDelayMicros: 0, policy: off}
---
apiVersion: ferry.dev/v1
kind: Function
metadata: {name: echo-i64}
spec:
  runtime: echo
  config: {datatype: INT64, shape: [3]}
  batching: {maxBatchSize: 8, maxQueueDelayMicros: 0, policy: off}
---
apiVersion: ferry.dev/v1
kind: Function
metadata: {name: filter}
spec:
  runtime: wordfilter
  config: {blacklist: [darn]}
  batching: {maxBatchSize: 8, maxQueueDelayMicros: 0, policy: off}
)";

// One queued request fills it; its batcher runs only when the test says so.
constexpr char kTiny[] = R"(
apiVersion: ferry.dev/v1
kind: Function
metadata: {name: tiny}
spec:
  runtime: echo
  batching: {maxBatchSize: 1, maxQueueSize: 1, policy: off}
)";

template <typename T>
Tensor Fixed(const std::string& name, DataType dtype, std::vector<int64_t> shape,
             const std::vector<T>& values) {
  Tensor t{.name = name, .dtype = dtype, .shape = std::move(shape)};
  t.data.assign(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(T));
  return t;
}

Tensor Bytes(const std::string& name, std::vector<std::string> values) {
  Tensor t{.name = name, .dtype = DataType::kBytes, .shape = {static_cast<int64_t>(values.size())}};
  t.bytes = std::move(values);
  return t;
}

InferenceRequest Request(const std::string& model, Tensor input, const std::string& id = "") {
  InferenceRequest r;
  r.model_name = model;
  r.id = id;
  r.inputs.push_back(std::move(input));
  return r;
}

// An agent in this process: core, HTTP and gRPC front ends on ephemeral loopback ports.
struct Agent {
  static std::unique_ptr<Agent> Start(const char* manifests, bool start_threads,
                                      int http_port = 0) {
    auto agent = std::make_unique<Agent>();
    auto specs = ParseManifests(manifests, "/test/functions.yaml", "/test");
    EXPECT_TRUE(specs.ok()) << specs.status();
    if (!specs.ok()) return nullptr;
    agent::AgentCoreOptions core_options;
    core_options.functions = *specs;
    core_options.start_threads = start_threads;
    core_options.gpu_absent_reason = "no GPU: test";
    auto core = agent::AgentCore::Create(core_options);
    EXPECT_TRUE(core.ok()) << core.status();
    if (!core.ok()) return nullptr;
    agent->core = *std::move(core);
    auto http = agent::HttpServer::Create({.port = http_port}, agent->core.get());
    EXPECT_TRUE(http.ok()) << http.status();
    if (!http.ok()) return nullptr;
    agent->http = *std::move(http);
    auto grpc = agent::GrpcServer::Create({.port = 0}, agent->core.get());
    EXPECT_TRUE(grpc.ok()) << grpc.status();
    if (!grpc.ok()) return nullptr;
    agent->grpc = *std::move(grpc);
    return agent;
  }
  // The agent's own order: the core drains (answering what is queued, even with the batcher
  // stopped) before the HTTP server waits for its requests' answers.
  ~Agent() {
    if (grpc) grpc->Shutdown(1000);
    if (core) core->Drain();
    if (http) http->Shutdown();
  }
  ClientOptions Options() const {
    return {.http_address = "127.0.0.1:" + std::to_string(http->port()),
            .grpc_address = "127.0.0.1:" + std::to_string(grpc->port()),
            .timeout_ms = 10'000};
  }

  std::unique_ptr<agent::AgentCore> core;
  std::unique_ptr<agent::HttpServer> http;
  std::unique_ptr<agent::GrpcServer> grpc;
};

class ClientTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { agent_ = Agent::Start(kFunctions, true).release(); }
  static void TearDownTestSuite() {
    delete agent_;
    agent_ = nullptr;
  }
  void SetUp() override {
    ASSERT_NE(agent_, nullptr);
    auto client = Client::Create(agent_->Options());
    ASSERT_TRUE(client.ok()) << client.status();
    client_ = *std::move(client);
  }

  static Agent* agent_;
  std::unique_ptr<Client> client_;
};
Agent* ClientTest::agent_ = nullptr;

constexpr InferProtocol kProtocols[] = {InferProtocol::kHttpJson, InferProtocol::kHttpBinary,
                                        InferProtocol::kGrpc};

TEST_F(ClientTest, JsonBinaryAndGrpcGiveTheSameOutputs) {
  const std::vector<InferenceRequest> requests = {
      Request("echo", Bytes("INPUT0", {"hello", "", "w\xc3\xb6rld"}), "bytes-1"),
      Request("echo-f32", Fixed<float>("INPUT0", DataType::kFp32, {2, 2}, {1.5f, -2, 0.25f, 1e9f})),
      Request("echo-i32", Fixed<int32_t>("x", DataType::kInt32, {3}, {1, -2, 2147483647})),
      Request("echo-i64", Fixed<int64_t>("INPUT0", DataType::kInt64, {1, 3},
                                         {int64_t{1} << 53, -1, (int64_t{1} << 62) + 1})),
  };
  for (const InferenceRequest& request : requests) {
    const Tensor& input = request.inputs[0];
    std::vector<InferenceResponse> answers;
    for (InferProtocol protocol : kProtocols) {
      auto res = client_->Infer(request, protocol);
      ASSERT_TRUE(res.ok()) << request.model_name << " protocol " << static_cast<int>(protocol)
                            << ": " << res.status();
      EXPECT_EQ(res->model_name, request.model_name);
      EXPECT_EQ(res->model_version, "1");
      EXPECT_EQ(res->id, request.id);
      ASSERT_EQ(res->outputs.size(), 1u);
      const Tensor& out = res->outputs[0];
      EXPECT_EQ(out.dtype, input.dtype);
      EXPECT_EQ(out.shape, input.shape);
      EXPECT_EQ(out.data, input.data) << request.model_name;
      EXPECT_EQ(out.bytes, input.bytes) << request.model_name;
      answers.push_back(*std::move(res));
    }
    EXPECT_EQ(answers[0].outputs[0].name, answers[2].outputs[0].name);
    EXPECT_EQ(answers[1].outputs[0].name, answers[2].outputs[0].name);
  }
  // INT64 beyond 2^53 survives JSON both ways.
  EXPECT_EQ(client_->http_connections_opened(), 1);
}

TEST_F(ClientTest, RequestedOutputsAndParametersTravelOnEveryProtocol) {
  InferenceRequest r = Request("filter", Bytes("text", {"oh darn it", "fine", "darn darn"}), "f1");
  r.outputs.push_back({.name = "count"});
  r.priority = 1;
  r.timeout_us = 5'000'000;
  r.parameters["note"] = std::string("passed to the function");
  for (InferProtocol protocol : kProtocols) {
    auto res = client_->Infer(r, protocol);
    ASSERT_TRUE(res.ok()) << res.status();
    ASSERT_EQ(res->outputs.size(), 1u) << "only the requested output";
    const Tensor& count = res->outputs[0];
    EXPECT_EQ(count.name, "count");
    ASSERT_EQ(count.dtype, DataType::kInt32);
    EXPECT_EQ(std::vector<int32_t>(count.as<int32_t>(), count.as<int32_t>() + 3),
              (std::vector<int32_t>{1, 0, 2}));
  }
}

TEST_F(ClientTest, ClipperPredict) {
  auto one = client_->Predict("echo", {{"input", "hello"}});
  ASSERT_TRUE(one.ok()) << one.status();
  EXPECT_EQ((*one)["output"], "hello");
  EXPECT_EQ((*one)["default"], false);
  auto batch = client_->Predict("echo-f32", {{"input_batch", {{1, 2}, {3, 4.5}}}});
  ASSERT_TRUE(batch.ok()) << batch.status();
  ASSERT_EQ((*batch)["batch_predictions"].size(), 2u);
  EXPECT_EQ((*batch)["batch_predictions"][1]["output"], json({3, 4.5}));
  auto several = client_->Predict("filter", {{"input", "you darn fool"}});
  ASSERT_TRUE(several.ok()) << several.status();
  EXPECT_EQ((*several)["output"]["count"], 1);
  auto missing = client_->Predict("nope", {{"input", "x"}});
  EXPECT_TRUE(absl::IsNotFound(missing.status())) << missing.status();
}

TEST_F(ClientTest, MetadataAndHealthOverHttpAndGrpc) {
  for (bool grpc : {false, true}) {
    auto info = client_->ModelMetadata("filter", "", grpc);
    ASSERT_TRUE(info.ok()) << info.status();
    EXPECT_EQ(info->name, "filter");
    EXPECT_EQ(info->versions, (std::vector<std::string>{"1"}));
    EXPECT_EQ(info->platform, "ferry_wordfilter");
    ASSERT_EQ(info->inputs.size(), 1u);
    EXPECT_EQ(info->inputs[0].name, "text");
    EXPECT_EQ(info->inputs[0].dtype, DataType::kBytes);
    EXPECT_EQ(info->inputs[0].shape, (std::vector<int64_t>{-1}));
    ASSERT_EQ(info->outputs.size(), 2u);
    EXPECT_EQ(info->outputs[1].dtype, DataType::kInt32);

    auto versioned = client_->ModelMetadata("echo-f32", "1", grpc);
    ASSERT_TRUE(versioned.ok()) << versioned.status();
    EXPECT_EQ(versioned->inputs[0].shape, (std::vector<int64_t>{-1, 2}));

    EXPECT_EQ(client_->ModelReady("echo", "", grpc).value_or(false), true);
    EXPECT_EQ(client_->ModelReady("echo", "1", grpc).value_or(false), true);
    EXPECT_TRUE(absl::IsNotFound(client_->ModelReady("nope", "", grpc).status()));
    EXPECT_TRUE(absl::IsNotFound(client_->ModelReady("echo", "9", grpc).status()));
    EXPECT_TRUE(absl::IsNotFound(client_->ModelMetadata("nope", "", grpc).status()));
    EXPECT_EQ(client_->ServerLive(grpc).value_or(false), true);
    EXPECT_EQ(client_->ServerReady(grpc).value_or(false), true);
  }
}

TEST_F(ClientTest, UnknownModelIsNotFoundWithTheServersMessage) {
  const InferenceRequest r = Request("nope", Bytes("INPUT0", {"x"}));
  auto raw = client_->SendRaw(*EncodeHttpInfer(r, InferProtocol::kHttpJson));
  ASSERT_TRUE(raw.ok()) << raw.status();
  ASSERT_EQ(raw->status, 404);
  const std::string server_message = json::parse(raw->body)["error"];
  EXPECT_NE(server_message.find("nope"), std::string::npos) << server_message;
  for (InferProtocol protocol : kProtocols) {
    const absl::Status s = client_->Infer(r, protocol).status();
    EXPECT_TRUE(absl::IsNotFound(s)) << s;
    EXPECT_NE(s.message().find("nope"), std::string::npos) << s;
    if (protocol != InferProtocol::kGrpc) {
      EXPECT_EQ(s.message(), server_message);
      EXPECT_EQ(HttpStatusOf(s), 404);
    }
  }
}

TEST_F(ClientTest, InvalidInputIsInvalidArgumentNamingIt) {
  const InferenceRequest r =
      Request("echo-f32", Fixed<float>("WRONG", DataType::kFp32, {1, 2}, {1, 2}));
  for (InferProtocol protocol : kProtocols) {
    const absl::Status s = client_->Infer(r, protocol).status();
    EXPECT_TRUE(absl::IsInvalidArgument(s)) << s;
    EXPECT_NE(s.message().find("WRONG"), std::string::npos) << s;
  }
}

TEST_F(ClientTest, PreEncodedRequestsReuseOneConnection) {
  const InferenceRequest r =
      Request("echo-f32", Fixed<float>("INPUT0", DataType::kFp32, {1, 2}, {7, 8}));
  const HttpRequest binary = *EncodeHttpInfer(r, InferProtocol::kHttpBinary);
  const HttpRequest plain = *EncodeHttpInfer(r, InferProtocol::kHttpJson);
  const inference::ModelInferRequest grpc = *EncodeGrpcInfer(r);
  for (int i = 0; i < 20; ++i) {
    for (const HttpRequest* req : {&binary, &plain}) {
      auto reply = client_->SendRaw(*req);
      ASSERT_TRUE(reply.ok()) << reply.status();
      ASSERT_EQ(reply->status, 200) << reply->body;
      auto res = DecodeHttpInfer(*reply);
      ASSERT_TRUE(res.ok()) << res.status();
      EXPECT_EQ(res->outputs[0].data, r.inputs[0].data);
    }
    auto g = client_->SendGrpcRaw(grpc);
    ASSERT_TRUE(g.ok()) << g.status();
    EXPECT_EQ(g->raw_output_contents(0), r.inputs[0].data);
  }
  EXPECT_EQ(client_->http_connections_opened(), 1) << "keep-alive held for 40 requests";
}

TEST_F(ClientTest, OneClientIsSafeFromSeveralThreads) {
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 10; ++i) {
        const std::string word = "t" + std::to_string(t) + "-" + std::to_string(i);
        auto res = client_->Infer(Request("echo", Bytes("INPUT0", {word})),
                                  i % 2 ? InferProtocol::kGrpc : InferProtocol::kHttpBinary);
        if (res.ok() && res->outputs[0].bytes[0] == word) ++ok;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok.load(), 40);
  EXPECT_EQ(client_->http_connections_opened(), 1);
}

TEST_F(ClientTest, CallsWithoutTheirAddressAreFailedPrecondition) {
  auto http_only = Client::Create({.http_address = agent_->Options().http_address});
  ASSERT_TRUE(http_only.ok());
  const InferenceRequest r = Request("echo", Bytes("INPUT0", {"x"}));
  EXPECT_TRUE(absl::IsFailedPrecondition((*http_only)->Infer(r, InferProtocol::kGrpc).status()));
  EXPECT_TRUE(absl::IsFailedPrecondition((*http_only)->ListFunctions().status()));
  EXPECT_TRUE((*http_only)->Infer(r).ok());
  EXPECT_TRUE(absl::IsInvalidArgument(Client::Create({.http_address = "nohost"}).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(Client::Create({.grpc_address = "h:99999"}).status()));
}

TEST(ClientConnectionTest, ReconnectsAfterTheServerClosesTheKeptAliveConnection) {
  auto agent = Agent::Start(kFunctions, true);
  ASSERT_NE(agent, nullptr);
  const int port = agent->http->port();
  auto client = Client::Create(agent->Options());
  ASSERT_TRUE(client.ok());
  const InferenceRequest r = Request("echo", Bytes("INPUT0", {"before"}));
  ASSERT_TRUE((*client)->Infer(r).ok());
  EXPECT_EQ((*client)->http_connections_opened(), 1);

  // The server goes away, closing the idle kept-alive connection: the next call cannot connect.
  agent->http->Shutdown();
  agent->http.reset();
  const absl::Status down = (*client)->Infer(r).status();
  EXPECT_TRUE(absl::IsUnavailable(down)) << down;

  // A server on the same port again: the client connects afresh.
  auto again = agent::HttpServer::Create({.port = port}, agent->core.get());
  ASSERT_TRUE(again.ok()) << again.status();
  agent->http = *std::move(again);
  auto res = (*client)->Infer(r);
  ASSERT_TRUE(res.ok()) << res.status();
  EXPECT_EQ(res->outputs[0].bytes[0], "before");
  const int64_t opened = (*client)->http_connections_opened();

  // The server closes the kept-alive connection while the client is idle: the client notices
  // on its next request and sends it once more on a new connection, invisibly to the caller.
  agent->http->Shutdown();
  auto third = agent::HttpServer::Create({.port = port}, agent->core.get());
  ASSERT_TRUE(third.ok()) << third.status();
  agent->http = *std::move(third);
  res = (*client)->Infer(Request("echo", Bytes("INPUT0", {"after"})));
  ASSERT_TRUE(res.ok()) << res.status();
  EXPECT_EQ(res->outputs[0].bytes[0], "after");
  EXPECT_EQ((*client)->http_connections_opened(), opened + 1);
}

TEST(ClientOverloadTest, FullQueueIsResourceExhaustedOnEveryProtocol) {
  auto agent = Agent::Start(kTiny, /*start_threads=*/false);
  ASSERT_NE(agent, nullptr);
  // Fill the one-slot queue directly; the batcher does not run until the test says so.
  std::optional<absl::StatusOr<InferenceResponse>> queued;
  auto first = std::make_unique<InferenceRequest>(Request("tiny", Bytes("INPUT0", {"first"})));
  agent->core->Infer(std::move(first),
                     [&queued](absl::StatusOr<InferenceResponse> r) { queued = std::move(r); });
  ASSERT_FALSE(queued.has_value());

  auto client = Client::Create(agent->Options());
  ASSERT_TRUE(client.ok());
  const InferenceRequest r = Request("tiny", Bytes("INPUT0", {"second"}));
  auto raw = (*client)->SendRaw(*EncodeHttpInfer(r, InferProtocol::kHttpJson));
  ASSERT_TRUE(raw.ok()) << raw.status();
  ASSERT_EQ(raw->status, 429) << raw->body;
  const std::string server_message = json::parse(raw->body)["error"];
  for (InferProtocol protocol : kProtocols) {
    const absl::Status s = (*client)->Infer(r, protocol).status();
    EXPECT_TRUE(absl::IsResourceExhausted(s)) << s;
    EXPECT_TRUE(IsRetryable(s));
    if (protocol != InferProtocol::kGrpc) {
      EXPECT_EQ(s.message(), server_message);
      EXPECT_EQ(HttpStatusOf(s), 429);
    }
  }
  // The queued request is answered once its batch runs; then there is room again.
  ASSERT_TRUE(agent->core->host_for_test("tiny")->batcher_for_test()->RunOnce());
  ASSERT_TRUE(queued.has_value() && queued->ok());
  EXPECT_EQ((*queued)->outputs[0].bytes[0], "first");
}

TEST(ClientOverloadTest, UnansweredCallsEndAtTheTimeout) {
  auto agent = Agent::Start(kTiny, /*start_threads=*/false);
  ASSERT_NE(agent, nullptr);
  ClientOptions options = agent->Options();
  options.timeout_ms = 100;
  auto client = Client::Create(options);
  ASSERT_TRUE(client.ok());
  // The batcher never runs, so nothing is answered.
  const InferenceRequest r = Request("tiny", Bytes("INPUT0", {"stuck"}));
  const absl::Status http = (*client)->Infer(r, InferProtocol::kHttpJson).status();
  EXPECT_TRUE(absl::IsDeadlineExceeded(http)) << http;
  EXPECT_EQ((*client)->http_connections_opened(), 1);
  // That connection may still carry the late answer: the client does not reuse it.
  const absl::Status again = (*client)->Infer(r, InferProtocol::kHttpBinary).status();
  EXPECT_TRUE(absl::IsDeadlineExceeded(again) || absl::IsResourceExhausted(again)) << again;
  EXPECT_EQ((*client)->http_connections_opened(), 2);
  const absl::Status grpc = (*client)->Infer(r, InferProtocol::kGrpc).status();
  EXPECT_TRUE(absl::IsDeadlineExceeded(grpc) || absl::IsResourceExhausted(grpc)) << grpc;
}

constexpr char kControlFunction[] = R"(
apiVersion: ferry.dev/v1
kind: Function
metadata: {name: echo}
spec:
  runtime: echo
  hardware: {accelerator: cpu, cpuCores: 1, memoryMiB: 128}
  scaling: {minReplicas: 2, maxReplicas: 2}
)";

class ClientControlTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string dir = ::testing::TempDir() + "/ferry-client-control-test";
    std::filesystem::remove_all(dir);
    auto store = control::SqliteStateStore::Create({.path = dir + "/ferry.db"});
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = *std::move(store);
    auto controller = control::Controller::Create({.store = store_.get()});
    ASSERT_TRUE(controller.ok()) << controller.status();
    controller_ = *std::move(controller);
    service_ = std::make_unique<control::ControlPlaneService>(controller_.get(), "s3cret");
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    builder.RegisterService(service_.get());
    server_ = builder.BuildAndStart();
    ASSERT_GT(port_, 0);
  }
  void TearDown() override {
    server_->Shutdown(std::chrono::system_clock::now() + std::chrono::milliseconds(100));
  }
  std::unique_ptr<Client> NewClient(const std::string& token) {
    auto client = Client::Create(
        {.control_address = "127.0.0.1:" + std::to_string(port_), .admin_token = token});
    EXPECT_TRUE(client.ok()) << client.status();
    return client.ok() ? *std::move(client) : nullptr;
  }

  int port_ = 0;
  std::unique_ptr<control::SqliteStateStore> store_;
  std::unique_ptr<control::Controller> controller_;
  std::unique_ptr<control::ControlPlaneService> service_;
  std::unique_ptr<grpc::Server> server_;
};

TEST_F(ClientControlTest, ApplyGetDelete) {
  auto client = NewClient("s3cret");
  ASSERT_NE(client, nullptr);
  const std::vector<ManifestText> files = {{"/m/echo.yaml", kControlFunction}};

  auto dry = client->Apply(files, /*dry_run=*/true);
  ASSERT_TRUE(dry.ok()) << dry.status();
  EXPECT_EQ(client->ListFunctions()->functions_size(), 0) << "a dry run changes nothing";

  auto applied = client->Apply(files);
  ASSERT_TRUE(applied.ok()) << applied.status();
  ASSERT_EQ(applied->changes_size(), 1);
  EXPECT_EQ(applied->changes(0).name(), "echo");
  EXPECT_EQ(applied->changes(0).action(), "created");
  EXPECT_EQ(client->Apply(files)->changes(0).action(), "unchanged");

  auto functions = client->ListFunctions();
  ASSERT_TRUE(functions.ok()) << functions.status();
  ASSERT_EQ(functions->functions_size(), 1);
  EXPECT_EQ(functions->functions(0).runtime(), "echo");
  auto echo = client->GetFunction("echo");
  ASSERT_TRUE(echo.ok()) << echo.status();
  EXPECT_EQ(echo->source(), "/m/echo.yaml");
  EXPECT_EQ(echo->desired_replicas(), 2);
  // No node has registered: both replicas are pending, with the reason.
  auto replicas = client->ListReplicas("echo");
  ASSERT_TRUE(replicas.ok()) << replicas.status();
  ASSERT_EQ(replicas->size(), 2u);
  EXPECT_EQ((*replicas)[0].node_id(), "");
  EXPECT_EQ((*replicas)[0].state(), control::v1::REPLICA_STATE_PENDING);
  auto nodes = client->ListNodes();
  ASSERT_TRUE(nodes.ok()) << nodes.status();
  EXPECT_EQ(nodes->nodes_size(), 0);
  auto routes = client->GetRoutes("echo");
  ASSERT_TRUE(routes.ok()) << routes.status();
  EXPECT_EQ(routes->routes_size(), 0);

  ASSERT_TRUE(client->DeleteFunction("echo").ok());
  const absl::Status gone = client->GetFunction("echo").status();
  EXPECT_TRUE(absl::IsNotFound(gone)) << gone;
  EXPECT_TRUE(absl::IsNotFound(client->DeleteFunction("echo").status()));
  EXPECT_TRUE(absl::IsNotFound(client->ListReplicas("echo").status()));
}

TEST_F(ClientControlTest, BadManifestIsInvalidArgumentNamingFileAndField) {
  auto client = NewClient("s3cret");
  ASSERT_NE(client, nullptr);
  const absl::Status s = client
                             ->Apply({{"/m/bad.yaml", std::string(kControlFunction) +
                                                          "  batching: {maxBatchSize: 0}\n"}})
                             .status();
  EXPECT_TRUE(absl::IsInvalidArgument(s)) << s;
  EXPECT_NE(s.message().find("/m/bad.yaml"), std::string::npos) << s;
  EXPECT_NE(s.message().find("spec.batching.maxBatchSize"), std::string::npos) << s;
  EXPECT_EQ(client->ListFunctions()->functions_size(), 0);
}

TEST_F(ClientControlTest, WrongOrMissingTokenIsUnauthenticated) {
  for (const std::string token : {"", "wrong"}) {
    auto client = NewClient(token);
    ASSERT_NE(client, nullptr);
    EXPECT_TRUE(absl::IsUnauthenticated(client->ListFunctions().status()));
    EXPECT_TRUE(
        absl::IsUnauthenticated(client->Apply({{"/m/echo.yaml", kControlFunction}}).status()));
  }
  EXPECT_EQ(controller_->ListFunctions().functions_size(), 0);
}

}  // namespace
}  // namespace ferry
