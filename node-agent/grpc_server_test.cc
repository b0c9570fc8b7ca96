#include "node-agent/grpc_server.h"

#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>

#include <cstring>
#include <limits>
#include <stdexcept>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kserve_inference.grpc.pb.h"

namespace ferry::agent {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// A ServingCore with fixed models:
//   "echo"    answers with its inputs as outputs, from another thread (async completion);
//   "full"    fails inline with ResourceExhausted (queue full);
//   "default" answers OK with is_default set (SLO default output);
//   "hold"    keeps the callback until ReleaseHeld();
//   "loading" exists but is not ready.
class FakeCore : public ServingCore {
 public:
  ~FakeCore() override {
    ReleaseHeld();
    for (auto& t : threads_) t.join();
  }

  bool IsLive() const override { return true; }
  bool IsReady() const override { return true; }
  ServerMetadata GetServerMetadata() const override {
    return {.name = "ferry", .version = "0.1.0", .extensions = {"binary_tensor_data"}};
  }
  absl::StatusOr<ModelMetadata> GetModelMetadata(const std::string& name,
                                                 const std::string& version) const override {
    if (name == "throwmeta") throw std::runtime_error("metadata exploded");
    const bool known =
        name == "echo" || name == "full" || name == "default" || name == "hold" || name == "throw";
    if (!known || !(version.empty() || version == "1")) {
      return absl::NotFoundError("unknown model '" + name + "'");
    }
    // The front end checks each input's header against these before decoding it; the tests
    // below send these names with these datatypes and ranks.
    ModelMetadata m;
    m.name = name;
    m.versions = {"1"};
    m.platform = "ferry_echo";
    m.inputs = {{"x", DataType::kFp32, {-1, -1}}, {"y", DataType::kInt32, {-1}},
                {"s", DataType::kBytes, {-1}},    {"i8", DataType::kInt8, {-1}},
                {"u16", DataType::kUint16, {-1}}, {"f64", DataType::kFp64, {-1, -1}},
                {"b", DataType::kBool, {-1}},     {"u8", DataType::kUint8, {-1}},
                {"h", DataType::kFp16, {-1, -1}}};
    m.outputs = {{"x", DataType::kFp32, {-1, -1}}};
    m.max_batch_size = 8;
    return m;
  }
  absl::Status ModelReady(const std::string& name, const std::string& /*version*/) const override {
    if (name == "echo") return absl::OkStatus();
    if (name == "loading") return absl::UnavailableError("loading");
    return absl::NotFoundError("unknown model '" + name + "'");
  }

  void Infer(std::unique_ptr<InferenceRequest> request, InferDone done) override {
    {
      absl::MutexLock lock(&mu_);
      last_priority_ = request->priority;
      last_timeout_us_ = request->timeout_us;
      last_parameters_ = request->parameters;
      last_outputs_.clear();
      for (const auto& o : request->outputs) last_outputs_.push_back(o.name);
    }
    const std::string& model = request->model_name;
    if (model == "echo") {
      absl::MutexLock lock(&mu_);
      threads_.emplace_back([request = std::move(request), done = std::move(done)]() mutable {
        InferenceResponse response;
        response.model_name = request->model_name;
        response.model_version = "1";
        response.id = request->id;
        response.parameters["served_by"] = std::string("fake");
        response.outputs = std::move(request->inputs);
        done(std::move(response));
      });
    } else if (model == "full") {
      done(absl::ResourceExhaustedError("queue full"));
    } else if (model == "default") {
      InferenceResponse response;
      response.is_default = true;
      Tensor t;
      t.name = "y";
      t.dtype = DataType::kInt32;
      t.shape = {1};
      t.data.assign("\x07\x00\x00\x00", 4);
      response.outputs.push_back(std::move(t));
      done(std::move(response));
    } else if (model == "hold") {
      absl::MutexLock lock(&mu_);
      held_.push_back(std::move(done));
    } else if (model == "throw") {
      throw std::runtime_error("core exploded");
    } else {
      done(absl::NotFoundError("unknown model '" + model + "'"));
    }
  }

  // Completes every held request with an empty response.
  void ReleaseHeld() {
    std::vector<InferDone> held;
    {
      absl::MutexLock lock(&mu_);
      held.swap(held_);
    }
    for (auto& done : held) done(InferenceResponse{});
  }
  void WaitForHeld(size_t n) {
    absl::MutexLock lock(&mu_);
    auto enough = [this, n]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return held_.size() >= n; };
    mu_.Await(absl::Condition(&enough));
  }

  int64_t last_priority() {
    absl::MutexLock lock(&mu_);
    return last_priority_;
  }
  int64_t last_timeout_us() {
    absl::MutexLock lock(&mu_);
    return last_timeout_us_;
  }
  Parameters last_parameters() {
    absl::MutexLock lock(&mu_);
    return last_parameters_;
  }
  std::vector<std::string> last_outputs() {
    absl::MutexLock lock(&mu_);
    return last_outputs_;
  }

 private:
  absl::Mutex mu_;
  std::vector<std::thread> threads_ ABSL_GUARDED_BY(mu_);
  std::vector<InferDone> held_ ABSL_GUARDED_BY(mu_);
  int64_t last_priority_ ABSL_GUARDED_BY(mu_) = -1;
  int64_t last_timeout_us_ ABSL_GUARDED_BY(mu_) = -1;
  Parameters last_parameters_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> last_outputs_ ABSL_GUARDED_BY(mu_);
};

std::string Fp32Bytes(const std::vector<float>& values) {
  std::string out(values.size() * sizeof(float), '\0');
  std::memcpy(out.data(), values.data(), out.size());
  return out;
}

class GrpcServerTest : public ::testing::Test {
 protected:
  void SetUp() override { Start(GrpcServerOptions{.port = 0}); }

  void Start(GrpcServerOptions options) {
    auto server = GrpcServer::Create(options, &core_);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    ASSERT_GT(server_->port(), 0);
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(64 << 20);
    channel_ = grpc::CreateCustomChannel("127.0.0.1:" + std::to_string(server_->port()),
                                         grpc::InsecureChannelCredentials(), args);
    stub_ = inference::GRPCInferenceService::NewStub(channel_);
  }

  grpc::Status Infer(const inference::ModelInferRequest& request,
                     inference::ModelInferResponse* response) {
    grpc::ClientContext context;
    return stub_->ModelInfer(&context, request, response);
  }

  // grpc.health.v1.Health/Check with an empty HealthCheckRequest (service ""); returns the
  // serialized HealthCheckResponse. No health proto ships with the system gRPC, and the
  // message is one enum field, so the bytes are checked directly.
  grpc::Status HealthCheck(std::string* response_bytes) {
    grpc::GenericStub stub(channel_);
    grpc::ClientContext context;
    grpc::Slice empty_message(std::string{});
    grpc::ByteBuffer request(&empty_message, 1);  // a default ByteBuffer is no message at all
    grpc::ByteBuffer response;
    grpc::Status status;
    absl::Notification done;
    stub.UnaryCall(&context, "/grpc.health.v1.Health/Check", grpc::StubOptions(), &request,
                   &response, [&](grpc::Status s) {
                     status = std::move(s);
                     done.Notify();
                   });
    done.WaitForNotification();
    if (status.ok()) {
      std::vector<grpc::Slice> slices;
      EXPECT_TRUE(response.Dump(&slices).ok());
      response_bytes->clear();
      for (const auto& s : slices) {
        response_bytes->append(reinterpret_cast<const char*>(s.begin()), s.size());
      }
    }
    return status;
  }

  FakeCore core_;
  std::unique_ptr<GrpcServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<inference::GRPCInferenceService::Stub> stub_;
};

TEST_F(GrpcServerTest, HealthAndMetadata) {
  {
    grpc::ClientContext ctx;
    inference::ServerLiveResponse r;
    ASSERT_TRUE(stub_->ServerLive(&ctx, {}, &r).ok());
    EXPECT_TRUE(r.live());
  }
  {
    grpc::ClientContext ctx;
    inference::ServerReadyResponse r;
    ASSERT_TRUE(stub_->ServerReady(&ctx, {}, &r).ok());
    EXPECT_TRUE(r.ready());
  }
  {
    grpc::ClientContext ctx;
    inference::ServerMetadataResponse r;
    ASSERT_TRUE(stub_->ServerMetadata(&ctx, {}, &r).ok());
    EXPECT_EQ(r.name(), "ferry");
    EXPECT_EQ(r.version(), "0.1.0");
    EXPECT_THAT(r.extensions(), ElementsAre("binary_tensor_data"));
  }
  {
    grpc::ClientContext ctx;
    inference::ModelMetadataRequest req;
    req.set_name("echo");
    inference::ModelMetadataResponse r;
    ASSERT_TRUE(stub_->ModelMetadata(&ctx, req, &r).ok());
    EXPECT_EQ(r.name(), "echo");
    EXPECT_THAT(r.versions(), ElementsAre("1"));
    EXPECT_EQ(r.platform(), "ferry_echo");
    ASSERT_EQ(r.inputs_size(), 9);
    EXPECT_EQ(r.inputs(0).name(), "x");
    EXPECT_EQ(r.inputs(0).datatype(), "FP32");
    EXPECT_THAT(r.inputs(0).shape(), ElementsAre(-1, -1));
    ASSERT_EQ(r.outputs_size(), 1);
  }
  {
    grpc::ClientContext ctx;
    inference::ModelMetadataRequest req;
    req.set_name("nope");
    inference::ModelMetadataResponse r;
    const grpc::Status s = stub_->ModelMetadata(&ctx, req, &r);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);
    EXPECT_THAT(s.error_message(), HasSubstr("nope"));
  }
  auto model_ready = [&](const std::string& name, bool* ready) {
    grpc::ClientContext ctx;
    inference::ModelReadyRequest req;
    req.set_name(name);
    inference::ModelReadyResponse r;
    grpc::Status s = stub_->ModelReady(&ctx, req, &r);
    *ready = r.ready();
    return s;
  };
  bool ready = false;
  ASSERT_TRUE(model_ready("echo", &ready).ok());
  EXPECT_TRUE(ready);
  ASSERT_TRUE(model_ready("loading", &ready).ok());
  EXPECT_FALSE(ready);
  EXPECT_EQ(model_ready("nope", &ready).error_code(), grpc::StatusCode::NOT_FOUND);
}

TEST_F(GrpcServerTest, HealthServiceAnswersServing) {
  std::string bytes;
  const grpc::Status s = HealthCheck(&bytes);
  ASSERT_TRUE(s.ok()) << s.error_message();
  // HealthCheckResponse{status: SERVING(1)}: field 1, varint.
  EXPECT_EQ(bytes, std::string("\x08\x01", 2));
}

TEST_F(GrpcServerTest, ClientDeadlineBecomesTheRequestTimeout) {
  inference::ModelInferRequest req;
  req.set_model_name("echo");
  auto* in = req.add_inputs();
  in->set_name("x");
  in->set_datatype("FP32");
  in->add_shape(1);
  in->add_shape(1);
  req.add_raw_input_contents(Fp32Bytes({1}));
  inference::ModelInferResponse resp;

  // No deadline, no timeout parameter: no timeout.
  ASSERT_TRUE(Infer(req, &resp).ok());
  EXPECT_EQ(core_.last_timeout_us(), 0);

  // A 30 s deadline arrives as a timeout of about 30 s (the grpc-timeout header carries it
  // with a few significant digits, rounded up).
  {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    ASSERT_TRUE(stub_->ModelInfer(&context, req, &resp).ok());
    EXPECT_GT(core_.last_timeout_us(), 20'000'000);
    EXPECT_LE(core_.last_timeout_us(), 31'000'000);
  }

  // The shorter of the deadline and the timeout parameter wins.
  (*req.mutable_parameters())["timeout"].set_int64_param(1500);
  {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    ASSERT_TRUE(stub_->ModelInfer(&context, req, &resp).ok());
    EXPECT_EQ(core_.last_timeout_us(), 1500);
  }
}

TEST_F(GrpcServerTest, InferRawFp32) {
  inference::ModelInferRequest req;
  req.set_model_name("echo");
  req.set_id("req-1");
  // tritonclient sends priority as uint64 and timeout as int64.
  (*req.mutable_parameters())["priority"].set_uint64_param(2);
  (*req.mutable_parameters())["timeout"].set_int64_param(1500);
  (*req.mutable_parameters())["tag"].set_string_param("t");
  auto* in = req.add_inputs();
  in->set_name("x");
  in->set_datatype("FP32");
  in->add_shape(2);
  in->add_shape(3);
  const std::vector<float> values = {1, 2, 3, 4.5f, -5, 6};
  req.add_raw_input_contents(Fp32Bytes(values));
  req.add_outputs()->set_name("x");

  inference::ModelInferResponse resp;
  const grpc::Status s = Infer(req, &resp);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(resp.model_name(), "echo");
  EXPECT_EQ(resp.model_version(), "1");
  EXPECT_EQ(resp.id(), "req-1");
  EXPECT_EQ(resp.parameters().at("served_by").string_param(), "fake");
  ASSERT_EQ(resp.outputs_size(), 1);
  EXPECT_EQ(resp.outputs(0).name(), "x");
  EXPECT_EQ(resp.outputs(0).datatype(), "FP32");
  EXPECT_THAT(resp.outputs(0).shape(), ElementsAre(2, 3));
  ASSERT_EQ(resp.raw_output_contents_size(), 1);
  EXPECT_EQ(resp.raw_output_contents(0), Fp32Bytes(values));

  EXPECT_EQ(core_.last_priority(), 2);
  EXPECT_EQ(core_.last_timeout_us(), 1500);
  const Parameters params = core_.last_parameters();
  EXPECT_EQ(params.size(), 1u);  // the reserved ones are consumed
  EXPECT_EQ(std::get<std::string>(params.at("tag")), "t");
  EXPECT_THAT(core_.last_outputs(), ElementsAre("x"));
}

TEST_F(GrpcServerTest, InferRawBytes) {
  const std::vector<std::string> elements = {"a", "hello", ""};
  inference::ModelInferRequest req;
  req.set_model_name("echo");
  auto* in = req.add_inputs();
  in->set_name("s");
  in->set_datatype("BYTES");
  in->add_shape(3);
  req.add_raw_input_contents(EncodeBytesElements(elements));

  inference::ModelInferResponse resp;
  const grpc::Status s = Infer(req, &resp);
  ASSERT_TRUE(s.ok()) << s.error_message();
  ASSERT_EQ(resp.outputs_size(), 1);
  EXPECT_EQ(resp.outputs(0).datatype(), "BYTES");
  EXPECT_THAT(resp.outputs(0).shape(), ElementsAre(3));
  ASSERT_EQ(resp.raw_output_contents_size(), 1);
  EXPECT_EQ(resp.raw_output_contents(0), EncodeBytesElements(elements));
}

TEST_F(GrpcServerTest, InferTypedContents) {
  inference::ModelInferRequest req;
  req.set_model_name("echo");
  auto* i8 = req.add_inputs();
  i8->set_name("i8");
  i8->set_datatype("INT8");
  i8->add_shape(3);
  for (int v : {-128, 0, 127}) i8->mutable_contents()->add_int_contents(v);
  auto* u16 = req.add_inputs();
  u16->set_name("u16");
  u16->set_datatype("UINT16");
  u16->add_shape(2);
  for (uint32_t v : {1u, 65535u}) u16->mutable_contents()->add_uint_contents(v);
  auto* f64 = req.add_inputs();
  f64->set_name("f64");
  f64->set_datatype("FP64");
  f64->add_shape(1);
  f64->add_shape(2);
  f64->mutable_contents()->add_fp64_contents(0.25);
  f64->mutable_contents()->add_fp64_contents(-1e300);
  auto* b = req.add_inputs();
  b->set_name("b");
  b->set_datatype("BOOL");
  b->add_shape(2);
  b->mutable_contents()->add_bool_contents(true);
  b->mutable_contents()->add_bool_contents(false);
  auto* s = req.add_inputs();
  s->set_name("s");
  s->set_datatype("BYTES");
  s->add_shape(2);
  s->mutable_contents()->add_bytes_contents("xy");
  s->mutable_contents()->add_bytes_contents(std::string("\0z", 2));

  inference::ModelInferResponse resp;
  const grpc::Status status = Infer(req, &resp);
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_EQ(resp.raw_output_contents_size(), 5);
  EXPECT_EQ(resp.outputs(0).datatype(), "INT8");
  EXPECT_EQ(resp.raw_output_contents(0), std::string("\x80\x00\x7f", 3));
  EXPECT_EQ(resp.raw_output_contents(1), std::string("\x01\x00\xff\xff", 4));
  double doubles[2] = {0.25, -1e300};
  EXPECT_EQ(resp.raw_output_contents(2), std::string(reinterpret_cast<char*>(doubles), 16));
  EXPECT_THAT(resp.outputs(2).shape(), ElementsAre(1, 2));
  EXPECT_EQ(resp.raw_output_contents(3), std::string("\x01\x00", 2));
  EXPECT_EQ(resp.raw_output_contents(4), EncodeBytesElements({"xy", std::string("\0z", 2)}));
}

TEST_F(GrpcServerTest, DefaultOutputIsFlagged) {
  inference::ModelInferRequest req;
  req.set_model_name("default");
  req.set_id("d");
  inference::ModelInferResponse resp;
  ASSERT_TRUE(Infer(req, &resp).ok());
  ASSERT_TRUE(resp.parameters().contains("ferry_default"));
  EXPECT_TRUE(resp.parameters().at("ferry_default").bool_param());
  // Names the core left empty are filled from the request.
  EXPECT_EQ(resp.model_name(), "default");
  EXPECT_EQ(resp.id(), "d");
  ASSERT_EQ(resp.raw_output_contents_size(), 1);
  EXPECT_EQ(resp.raw_output_contents(0), std::string("\x07\x00\x00\x00", 4));
}

// One FP32 [1,2] input "x" for the error cases below.
inference::ModelInferRequest Fp32Request(const std::string& model) {
  inference::ModelInferRequest req;
  req.set_model_name(model);
  auto* in = req.add_inputs();
  in->set_name("x");
  in->set_datatype("FP32");
  in->add_shape(1);
  in->add_shape(2);
  return req;
}

TEST_F(GrpcServerTest, ErrorCodesAreMapped) {
  struct Case {
    std::string label;
    inference::ModelInferRequest request;
    grpc::StatusCode code;
    std::string message;
  };
  std::vector<Case> cases;
  {
    auto r = Fp32Request("nope");
    r.add_raw_input_contents(Fp32Bytes({1, 2}));
    cases.push_back({"unknown model", r, grpc::StatusCode::NOT_FOUND, "nope"});
  }
  {
    auto r = Fp32Request("full");
    r.add_raw_input_contents(Fp32Bytes({1, 2}));
    cases.push_back({"queue full", r, grpc::StatusCode::RESOURCE_EXHAUSTED, "queue full"});
  }
  {
    auto r = Fp32Request("echo");
    r.add_raw_input_contents(Fp32Bytes({1, 2, 3}));
    cases.push_back({"raw size", r, grpc::StatusCode::INVALID_ARGUMENT, "input 'x'"});
  }
  {
    auto r = Fp32Request("echo");
    r.mutable_inputs(0)->mutable_contents()->add_fp32_contents(1);
    cases.push_back({"typed count", r, grpc::StatusCode::INVALID_ARGUMENT, "input 'x'"});
  }
  {
    auto r = Fp32Request("echo");
    r.mutable_inputs(0)->mutable_contents()->add_int_contents(1);
    r.mutable_inputs(0)->mutable_contents()->add_int_contents(2);
    cases.push_back({"wrong field", r, grpc::StatusCode::INVALID_ARGUMENT, "fp32_contents"});
  }
  {
    auto r = Fp32Request("echo");
    r.add_raw_input_contents(Fp32Bytes({1, 2}));
    auto* in = r.add_inputs();
    in->set_name("y");
    in->set_datatype("INT32");
    in->add_shape(1);
    in->mutable_contents()->add_int_contents(3);
    cases.push_back({"mixed", r, grpc::StatusCode::INVALID_ARGUMENT, "raw_input_contents"});
  }
  {
    auto r = Fp32Request("echo");
    r.mutable_inputs(0)->set_datatype("FLOAT");
    cases.push_back({"datatype", r, grpc::StatusCode::INVALID_ARGUMENT, "FLOAT"});
  }
  {
    auto r = Fp32Request("echo");
    r.mutable_inputs(0)->set_name("i8");
    r.mutable_inputs(0)->set_datatype("INT8");
    r.mutable_inputs(0)->clear_shape();
    r.mutable_inputs(0)->add_shape(2);
    r.mutable_inputs(0)->mutable_contents()->add_int_contents(1);
    r.mutable_inputs(0)->mutable_contents()->add_int_contents(200);
    cases.push_back({"int8 range", r, grpc::StatusCode::INVALID_ARGUMENT, "out of range"});
  }
  {
    auto r = Fp32Request("echo");
    r.add_raw_input_contents(Fp32Bytes({1, 2}));
    (*r.mutable_parameters())["big"].set_uint64_param(std::numeric_limits<uint64_t>::max());
    cases.push_back({"uint64 param", r, grpc::StatusCode::INVALID_ARGUMENT, "'big'"});
  }
  {
    auto r = Fp32Request("echo");
    r.add_raw_input_contents(Fp32Bytes({1, 2}));
    (*r.mutable_parameters())["priority"].set_string_param("high");
    cases.push_back({"priority type", r, grpc::StatusCode::INVALID_ARGUMENT, "priority"});
  }
  {
    auto r = Fp32Request("echo");
    (*r.mutable_inputs(0)->mutable_parameters())["shared_memory_region"].set_string_param("r");
    cases.push_back({"shm", r, grpc::StatusCode::INVALID_ARGUMENT, "shared-memory"});
  }
  {
    auto r = Fp32Request("echo");
    r.mutable_inputs(0)->set_name("h");
    r.mutable_inputs(0)->set_datatype("FP16");
    r.mutable_inputs(0)->mutable_contents()->add_fp32_contents(1);
    r.mutable_inputs(0)->mutable_contents()->add_fp32_contents(2);
    cases.push_back({"fp16 typed", r, grpc::StatusCode::INVALID_ARGUMENT, "raw_input_contents"});
  }
  // Headers are checked against the model before any contents are decoded.
  {
    auto r = Fp32Request("echo");
    r.mutable_inputs(0)->set_shape(1, int64_t{1} << 62);
    cases.push_back({"byte size overflow", r, grpc::StatusCode::INVALID_ARGUMENT, "too large"});
  }
  {
    auto r = Fp32Request("echo");
    r.mutable_inputs(0)->set_shape(0, 9);
    r.mutable_inputs(0)->set_shape(1, int64_t{1} << 40);
    cases.push_back({"batch dim", r, grpc::StatusCode::INVALID_ARGUMENT, "maxBatchSize 8"});
  }
  {
    auto r = Fp32Request("echo");
    r.mutable_inputs(0)->set_datatype("INT32");
    r.mutable_inputs(0)->mutable_contents()->add_int_contents(1);
    cases.push_back({"declared datatype", r, grpc::StatusCode::INVALID_ARGUMENT,
                     "datatype INT32, expected FP32"});
  }
  {
    auto r = Fp32Request("echo");
    r.mutable_inputs(0)->set_name("zz");
    cases.push_back({"unknown input", r, grpc::StatusCode::INVALID_ARGUMENT, "unknown input 'zz'"});
  }
  {
    auto r = Fp32Request("echo");
    r.add_raw_input_contents(Fp32Bytes({1, 2}));
    r.set_id(std::string(kMaxRequestIdBytes + 1, 'i'));
    cases.push_back({"long id", r, grpc::StatusCode::INVALID_ARGUMENT, "'id'"});
  }
  {
    auto r = Fp32Request("echo");
    r.add_raw_input_contents(Fp32Bytes({1, 2}));
    (*r.mutable_parameters())["tag"].set_string_param(
        std::string(kMaxParameterStringBytes + 1, 't'));
    cases.push_back({"long parameter", r, grpc::StatusCode::INVALID_ARGUMENT, "'tag'"});
  }
  for (const Case& c : cases) {
    inference::ModelInferResponse resp;
    const grpc::Status s = Infer(c.request, &resp);
    EXPECT_EQ(s.error_code(), c.code) << c.label << ": " << s.error_message();
    EXPECT_THAT(s.error_message(), HasSubstr(c.message)) << c.label;
  }
}

TEST_F(GrpcServerTest, MaxMessageSizeIsEnforced) {
  server_.reset();
  Start(GrpcServerOptions{.port = 0, .max_message_bytes = 1024});
  inference::ModelInferRequest req = Fp32Request("echo");
  req.mutable_inputs(0)->set_shape(1, 1024);
  req.add_raw_input_contents(Fp32Bytes(std::vector<float>(1024, 1.0f)));
  inference::ModelInferResponse resp;
  EXPECT_EQ(Infer(req, &resp).error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  // A small request still passes.
  inference::ModelInferRequest small = Fp32Request("echo");
  small.add_raw_input_contents(Fp32Bytes({1, 2}));
  EXPECT_TRUE(Infer(small, &resp).ok());
}

TEST_F(GrpcServerTest, PortInUseFails) {
  FakeCore other;
  auto second = GrpcServer::Create(GrpcServerOptions{.port = server_->port()}, &other);
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable) << second.status();
}

TEST_F(GrpcServerTest, RejectsBadOptions) {
  EXPECT_EQ(GrpcServer::Create(GrpcServerOptions{.port = -1}, &core_).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(GrpcServer::Create(GrpcServerOptions{.port = 0, .max_message_bytes = 0}, &core_)
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(GrpcServer::Create(GrpcServerOptions{.port = 0}, nullptr).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(GrpcServerTest, ShutdownStopsServing) {
  server_->Shutdown();
  server_->Shutdown();  // idempotent
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  inference::ServerLiveResponse r;
  EXPECT_FALSE(stub_->ServerLive(&ctx, {}, &r).ok());
}

TEST_F(GrpcServerTest, ShutdownCancelsCallsPastDeadline) {
  inference::ModelInferRequest req;
  req.set_model_name("hold");
  inference::ModelInferResponse resp;
  grpc::ClientContext ctx;
  grpc::Status status;
  absl::Notification finished;
  stub_->async()->ModelInfer(&ctx, &req, &resp, [&](grpc::Status s) {
    status = std::move(s);
    finished.Notify();
  });
  core_.WaitForHeld(1);
  server_->Shutdown(/*deadline_ms=*/0);
  finished.WaitForNotification();
  EXPECT_FALSE(status.ok());
  // The core completes after the call was cancelled: the result is dropped safely.
  core_.ReleaseHeld();
}

TEST_F(GrpcServerTest, HeldCallCompletesAsynchronously) {
  inference::ModelInferRequest req;
  req.set_model_name("hold");
  req.set_id("h");
  inference::ModelInferResponse resp;
  grpc::ClientContext ctx;
  grpc::Status status;
  absl::Notification finished;
  stub_->async()->ModelInfer(&ctx, &req, &resp, [&](grpc::Status s) {
    status = std::move(s);
    finished.Notify();
  });
  core_.WaitForHeld(1);
  // A second RPC is served while the first waits in the core: no thread is held by it.
  {
    grpc::ClientContext live_ctx;
    inference::ServerLiveResponse live;
    EXPECT_TRUE(stub_->ServerLive(&live_ctx, {}, &live).ok());
  }
  EXPECT_FALSE(finished.HasBeenNotified());
  core_.ReleaseHeld();
  finished.WaitForNotification();
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(resp.id(), "h");
  EXPECT_EQ(resp.model_name(), "hold");
}

TEST(GrpcTranslationTest, RangeChecksAndCounts) {
  inference::ModelInferRequest req;
  auto* in = req.add_inputs();
  in->set_name("u8");
  in->set_datatype("UINT8");
  in->add_shape(2);
  in->mutable_contents()->add_uint_contents(255);
  in->mutable_contents()->add_uint_contents(256);
  auto bad = FromProto(&req);
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("input 'u8'"));

  in->mutable_contents()->set_uint_contents(1, 0);
  auto good = FromProto(&req);
  ASSERT_TRUE(good.ok()) << good.status();
  ASSERT_EQ(good->inputs.size(), 1u);
  EXPECT_EQ(good->inputs[0].data, std::string("\xff\x00", 2));
  EXPECT_TRUE(good->inputs[0].CheckConsistent().ok());

  // raw_input_contents must have one entry per input.
  inference::ModelInferRequest two = Fp32Request("m");
  two.add_inputs()->CopyFrom(two.inputs(0));
  two.add_raw_input_contents(Fp32Bytes({1, 2}));
  auto mismatch = FromProto(&two);
  ASSERT_FALSE(mismatch.ok());
  EXPECT_THAT(std::string(mismatch.status().message()), HasSubstr("raw_input_contents"));

  // A truncated BYTES element names the input.
  inference::ModelInferRequest bytes;
  auto* s = bytes.add_inputs();
  s->set_name("s");
  s->set_datatype("BYTES");
  s->add_shape(1);
  bytes.add_raw_input_contents(
      std::string("\x05\x00\x00\x00"
                  "ab",
                  6));
  auto truncated = FromProto(&bytes);
  ASSERT_FALSE(truncated.ok());
  EXPECT_THAT(std::string(truncated.status().message()), HasSubstr("input 's'"));
}

TEST(GrpcTranslationTest, ResponseToProto) {
  InferenceResponse response;
  response.model_name = "m";
  response.id = "7";
  response.parameters["n"] = int64_t{3};
  response.parameters["f"] = 0.5;
  Tensor t;
  t.name = "out";
  t.dtype = DataType::kBytes;
  t.shape = {2};
  t.bytes = {"p", "qr"};
  response.outputs.push_back(t);
  inference::ModelInferResponse proto;
  ToProto(std::move(response), &proto);
  EXPECT_EQ(proto.model_name(), "m");
  EXPECT_EQ(proto.id(), "7");
  EXPECT_EQ(proto.parameters().at("n").int64_param(), 3);
  EXPECT_EQ(proto.parameters().at("f").double_param(), 0.5);
  EXPECT_FALSE(proto.parameters().contains("ferry_default"));
  ASSERT_EQ(proto.raw_output_contents_size(), 1);
  EXPECT_EQ(proto.raw_output_contents(0), EncodeBytesElements({"p", "qr"}));
  EXPECT_EQ(proto.outputs(0).contents().bytes_contents_size(), 0);
}

// A ModelInferRequest for "hold" with one FP32 input of `floats` values.
inference::ModelInferRequest HoldRequest(int floats) {
  inference::ModelInferRequest req;
  req.set_model_name("hold");
  auto* in = req.add_inputs();
  in->set_name("x");
  in->set_datatype("FP32");
  in->add_shape(1);
  in->add_shape(floats);
  req.add_raw_input_contents(std::string(static_cast<size_t>(floats) * 4, '\0'));
  return req;
}

TEST(GrpcServerOptionsTest, Validates) {
  EXPECT_TRUE(ValidateGrpcServerOptions(GrpcServerOptions{}).ok());
  auto invalid = [](void (*change)(GrpcServerOptions&)) {
    GrpcServerOptions options;
    change(options);
    return ValidateGrpcServerOptions(options).code() == absl::StatusCode::kInvalidArgument;
  };
  EXPECT_TRUE(invalid([](GrpcServerOptions& o) { o.host.clear(); }));
  EXPECT_TRUE(invalid([](GrpcServerOptions& o) { o.port = -1; }));
  EXPECT_TRUE(invalid([](GrpcServerOptions& o) { o.max_message_bytes = int64_t{1} << 40; }));
  EXPECT_TRUE(invalid([](GrpcServerOptions& o) { o.max_concurrent_streams = 0; }));
  EXPECT_TRUE(invalid([](GrpcServerOptions& o) { o.keepalive_time_ms = 0; }));
  EXPECT_TRUE(invalid([](GrpcServerOptions& o) { o.keepalive_timeout_ms = int64_t{1} << 40; }));
  EXPECT_TRUE(invalid([](GrpcServerOptions& o) { o.min_client_ping_interval_ms = -5; }));
}

TEST_F(GrpcServerTest, AnExceptionInAHandlerIsInternalAndTheServerKeepsServing) {
  inference::ModelInferRequest req;
  req.set_model_name("throw");
  inference::ModelInferResponse resp;
  grpc::Status status = Infer(req, &resp);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INTERNAL);
  EXPECT_THAT(status.error_message(), HasSubstr("core exploded"));
  {
    grpc::ClientContext ctx;
    inference::ModelMetadataRequest meta;
    meta.set_name("throwmeta");
    inference::ModelMetadataResponse meta_resp;
    status = stub_->ModelMetadata(&ctx, meta, &meta_resp);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INTERNAL);
    EXPECT_THAT(status.error_message(), HasSubstr("metadata exploded"));
  }
  // Before the request is decoded (no per-call state exists yet): INTERNAL, not the
  // UNIMPLEMENTED gRPC answers for an exception it catches itself.
  req.set_model_name("throwmeta");
  status = Infer(req, &resp);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INTERNAL);
  grpc::ClientContext ctx;
  inference::ServerLiveResponse live;
  EXPECT_TRUE(stub_->ServerLive(&ctx, {}, &live).ok());
  EXPECT_TRUE(live.live());
}

TEST_F(GrpcServerTest, MessagesOverTheByteBudgetAreRefusedAtOnce) {
  ByteBudget budget(1000);
  server_.reset();
  Start(GrpcServerOptions{.port = 0, .byte_budget = &budget});
  inference::ModelInferResponse resp;
  grpc::Status status = Infer(HoldRequest(500), &resp);  // 2000 bytes of tensor data
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(status.error_message(), HasSubstr("in flight"));
  EXPECT_EQ(budget.in_use_bytes(), 0);

  // A held call keeps its bytes charged until it is done.
  const inference::ModelInferRequest req = HoldRequest(150);  // 600 bytes
  grpc::ClientContext held_ctx;
  grpc::Status held_status;
  absl::Notification held_done;
  stub_->async()->ModelInfer(&held_ctx, &req, &resp, [&](grpc::Status s) {
    held_status = std::move(s);
    held_done.Notify();
  });
  core_.WaitForHeld(1);
  EXPECT_GE(budget.in_use_bytes(), 600);
  inference::ModelInferResponse second;
  EXPECT_EQ(Infer(req, &second).error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  core_.ReleaseHeld();
  held_done.WaitForNotification();
  EXPECT_TRUE(held_status.ok()) << held_status.error_message();
  server_->Shutdown();  // every call's OnDone has run once the server stopped
  EXPECT_EQ(budget.in_use_bytes(), 0);
}

}  // namespace
}  // namespace ferry::agent
