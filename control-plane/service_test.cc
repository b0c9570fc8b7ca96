// The gRPC surface of ferry-control over loopback: the admin token is enforced on every
// ControlPlane call (and a refused Apply changes nothing), and WatchRoutes streams a snapshot
// followed by updates.
#include "control-plane/service.h"

#include <filesystem>
#include <memory>
#include <string>

#include "control-plane/sqlite_state_store.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"

namespace ferry::control {
namespace {

constexpr char kEcho[] = R"(
apiVersion: ferry.dev/v1
kind: Function
metadata: {name: echo}
spec:
  runtime: echo
  hardware: {accelerator: cpu, cpuCores: 1, memoryMiB: 128}
)";

class ServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string dir = ::testing::TempDir() + "/ferry-service-test";
    std::filesystem::remove_all(dir);
    auto store = SqliteStateStore::Create({.path = dir + "/ferry.db"});
    ASSERT_TRUE(store.ok());
    store_ = *std::move(store);
    ControllerOptions o;
    o.store = store_.get();
    auto c = Controller::Create(o);
    ASSERT_TRUE(c.ok());
    controller_ = *std::move(c);
    control_ = std::make_unique<ControlPlaneService>(controller_.get(), "s3cret");
    grpc::ServerBuilder b;
    int port = 0;
    b.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    b.RegisterService(control_.get());
    server_ = b.BuildAndStart();
    ASSERT_GT(port, 0);
    stub_ = v1::ControlPlane::NewStub(grpc::CreateChannel("127.0.0.1:" + std::to_string(port),
                                                          grpc::InsecureChannelCredentials()));
  }
  void TearDown() override {
    server_->Shutdown(std::chrono::system_clock::now() + std::chrono::milliseconds(100));
  }
  static void Token(grpc::ClientContext* ctx, const std::string& token) {
    if (!token.empty()) ctx->AddMetadata("authorization", "Bearer " + token);
  }

  std::unique_ptr<SqliteStateStore> store_;
  std::unique_ptr<Controller> controller_;
  std::unique_ptr<ControlPlaneService> control_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<v1::ControlPlane::Stub> stub_;
};

TEST_F(ServiceTest, AdminTokenIsRequiredAndRefusedCallsChangeNothing) {
  v1::ApplyRequest req;
  req.add_files()->set_path("/m/echo.yaml");
  req.mutable_files(0)->set_content(kEcho);
  for (const std::string token : {"", "wrong", "s3cret-but-longer"}) {
    grpc::ClientContext ctx;
    Token(&ctx, token);
    v1::ApplyResponse resp;
    EXPECT_EQ(stub_->Apply(&ctx, req, &resp).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  }
  EXPECT_EQ(controller_->ListFunctions().functions_size(), 0);
  {
    grpc::ClientContext ctx;
    v1::ListNodesResponse resp;
    EXPECT_EQ(stub_->ListNodes(&ctx, {}, &resp).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  }
  grpc::ClientContext ctx;
  Token(&ctx, "s3cret");
  v1::ApplyResponse resp;
  ASSERT_TRUE(stub_->Apply(&ctx, req, &resp).ok());
  EXPECT_EQ(controller_->ListFunctions().functions_size(), 1);
}

TEST_F(ServiceTest, InvalidManifestIsInvalidArgumentNamingFileAndField) {
  v1::ApplyRequest req;
  req.add_files()->set_path("/m/echo.yaml");
  req.mutable_files(0)->set_content(std::string(kEcho) + "  batching: {maxBatchSize: 0}\n");
  grpc::ClientContext ctx;
  Token(&ctx, "s3cret");
  v1::ApplyResponse resp;
  const grpc::Status s = stub_->Apply(&ctx, req, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(s.error_message().find("/m/echo.yaml"), std::string::npos) << s.error_message();
  EXPECT_NE(s.error_message().find("spec.batching.maxBatchSize"), std::string::npos);
}

TEST_F(ServiceTest, WatchRoutesSendsSnapshotThenUpdates) {
  class Sink : public AgentChannel {
   public:
    void Send(const v1::ControlMessage&) override {}
  } sink;
  v1::Register reg;
  reg.set_node_name("a");
  reg.mutable_inventory()->set_cpu_cores(4);
  reg.mutable_inventory()->set_memory_bytes(int64_t{4} << 30);
  reg.set_http_address("a:8000");
  auto session = controller_->RegisterAgent(reg, &sink);
  ASSERT_TRUE(session.ok());

  grpc::ClientContext ctx;
  Token(&ctx, "s3cret");
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  v1::WatchRoutesRequest watch;
  auto reader = stub_->WatchRoutes(&ctx, watch);
  v1::RouteUpdate update;
  ASSERT_TRUE(reader->Read(&update));
  EXPECT_TRUE(update.snapshot());
  EXPECT_EQ(update.functions_size(), 0);

  v1::ApplyRequest req;
  req.add_files()->set_path("/m/echo.yaml");
  req.mutable_files(0)->set_content(kEcho);
  ASSERT_TRUE(controller_->Apply(req).ok());
  ASSERT_TRUE(reader->Read(&update));
  EXPECT_FALSE(update.snapshot());
  ASSERT_EQ(update.functions_size(), 1);
  ASSERT_EQ(update.functions(0).routes_size(), 1);
  EXPECT_EQ(update.functions(0).routes(0).http_address(), "a:8000");
  EXPECT_FALSE(update.functions(0).routes(0).ready());

  // The node is lost: the route is withdrawn (an empty set for the function).
  controller_->AgentDisconnected(*session);
  ASSERT_TRUE(reader->Read(&update));
  ASSERT_EQ(update.functions_size(), 1);
  EXPECT_EQ(update.functions(0).routes_size(), 0);
  ctx.TryCancel();
}

}  // namespace
}  // namespace ferry::control
