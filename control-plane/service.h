// gRPC front of the Controller: the ControlPlane service (with optional bearer-token auth) and
// the AgentService stream. Thread-safe; the services only translate and never hold state of
// their own beyond one queue per connected agent.
#ifndef FERRY_CONTROL_PLANE_SERVICE_H_
#define FERRY_CONTROL_PLANE_SERVICE_H_

#include <string>

#include "control-plane/controller.h"
#include "ferry_control.grpc.pb.h"

namespace ferry::control {

// Converts between absl and gRPC status (the codes are numerically identical).
grpc::Status ToGrpc(const absl::Status& status);

class ControlPlaneService final : public v1::ControlPlane::Service {
 public:
  // `controller` is not owned. `admin_token` "" = no authentication.
  ControlPlaneService(Controller* controller, std::string admin_token)
      : controller_(controller), admin_token_(std::move(admin_token)) {}

  grpc::Status Apply(grpc::ServerContext* ctx, const v1::ApplyRequest* req,
                     v1::ApplyResponse* resp) override;
  grpc::Status DeleteFunction(grpc::ServerContext* ctx, const v1::DeleteFunctionRequest* req,
                              v1::DeleteFunctionResponse* resp) override;
  grpc::Status GetFunction(grpc::ServerContext* ctx, const v1::GetFunctionRequest* req,
                           v1::FunctionStatus* resp) override;
  grpc::Status ListFunctions(grpc::ServerContext* ctx, const v1::ListFunctionsRequest* req,
                             v1::ListFunctionsResponse* resp) override;
  grpc::Status ListNodes(grpc::ServerContext* ctx, const v1::ListNodesRequest* req,
                         v1::ListNodesResponse* resp) override;
  grpc::Status GetRoutes(grpc::ServerContext* ctx, const v1::GetRoutesRequest* req,
                         v1::GetRoutesResponse* resp) override;
  grpc::Status GetUsage(grpc::ServerContext* ctx, const v1::GetUsageRequest* req,
                        v1::GetUsageResponse* resp) override;
  // Blocks its server thread for the life of the watch.
  grpc::Status WatchRoutes(grpc::ServerContext* ctx, const v1::WatchRoutesRequest* req,
                           grpc::ServerWriter<v1::RouteUpdate>* writer) override;

 private:
  grpc::Status Authorize(grpc::ServerContext* ctx) const;

  Controller* const controller_;
  const std::string admin_token_;
};

class AgentServiceImpl final : public v1::AgentService::Service {
 public:
  explicit AgentServiceImpl(Controller* controller) : controller_(controller) {}
  // Blocks its server thread for the life of the agent's stream (plus one writer thread).
  grpc::Status Connect(
      grpc::ServerContext* ctx,
      grpc::ServerReaderWriter<v1::ControlMessage, v1::AgentMessage>* stream) override;

 private:
  Controller* const controller_;
};

}  // namespace ferry::control

#endif  // FERRY_CONTROL_PLANE_SERVICE_H_
