#include "control-plane/service.h"

#include <deque>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace ferry::control {
namespace {

// Queues what the controller sends to one agent; a writer thread drains it into the stream.
class QueueChannel final : public AgentChannel {
 public:
  void Send(const v1::ControlMessage& message) override {
    absl::MutexLock lock(&mu_);
    if (!closed_) queue_.push_back(message);
  }
  // Blocks until a message or Close(); false when closed.
  bool Pop(v1::ControlMessage* out) {
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(
        +[](QueueChannel* c)
             ABSL_EXCLUSIVE_LOCKS_REQUIRED(c->mu_) { return c->closed_ || !c->queue_.empty(); },
        this));
    if (queue_.empty()) return false;
    *out = std::move(queue_.front());
    queue_.pop_front();
    return true;
  }
  void Close() {
    absl::MutexLock lock(&mu_);
    closed_ = true;
    queue_.clear();
  }

 private:
  absl::Mutex mu_;
  std::deque<v1::ControlMessage> queue_ ABSL_GUARDED_BY(mu_);
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
};

// Constant-time comparison so that the token cannot be guessed byte by byte from timings.
bool SameSecret(std::string_view a, std::string_view b) {
  unsigned diff = a.size() == b.size() ? 0 : 1;
  const size_t n = std::min(a.size(), b.size());
  for (size_t i = 0; i < n; ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  return diff == 0;
}

}  // namespace

grpc::Status ToGrpc(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

grpc::Status ControlPlaneService::Authorize(grpc::ServerContext* ctx) const {
  if (admin_token_.empty()) return grpc::Status::OK;
  const auto& md = ctx->client_metadata();
  auto it = md.find("authorization");
  if (it == md.end()) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                        "missing \"authorization: Bearer <token>\" metadata");
  }
  const std::string_view value(it->second.data(), it->second.size());
  constexpr std::string_view kBearer = "Bearer ";
  if (value.substr(0, kBearer.size()) != kBearer ||
      !SameSecret(value.substr(kBearer.size()), admin_token_)) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "invalid admin token");
  }
  return grpc::Status::OK;
}

grpc::Status ControlPlaneService::Apply(grpc::ServerContext* ctx, const v1::ApplyRequest* req,
                                        v1::ApplyResponse* resp) {
  if (grpc::Status s = Authorize(ctx); !s.ok()) return s;
  absl::StatusOr<v1::ApplyResponse> out = controller_->Apply(*req);
  if (!out.ok()) return ToGrpc(out.status());
  *resp = *std::move(out);
  return grpc::Status::OK;
}

grpc::Status ControlPlaneService::DeleteFunction(grpc::ServerContext* ctx,
                                                 const v1::DeleteFunctionRequest* req,
                                                 v1::DeleteFunctionResponse* resp) {
  if (grpc::Status s = Authorize(ctx); !s.ok()) return s;
  absl::StatusOr<int64_t> rev = controller_->DeleteFunction(req->name());
  if (!rev.ok()) return ToGrpc(rev.status());
  resp->set_revision(*rev);
  return grpc::Status::OK;
}

grpc::Status ControlPlaneService::GetFunction(grpc::ServerContext* ctx,
                                              const v1::GetFunctionRequest* req,
                                              v1::FunctionStatus* resp) {
  if (grpc::Status s = Authorize(ctx); !s.ok()) return s;
  absl::StatusOr<v1::FunctionStatus> st = controller_->GetFunction(req->name());
  if (!st.ok()) return ToGrpc(st.status());
  *resp = *std::move(st);
  return grpc::Status::OK;
}

grpc::Status ControlPlaneService::ListFunctions(grpc::ServerContext* ctx,
                                                const v1::ListFunctionsRequest*,
                                                v1::ListFunctionsResponse* resp) {
  if (grpc::Status s = Authorize(ctx); !s.ok()) return s;
  *resp = controller_->ListFunctions();
  return grpc::Status::OK;
}

grpc::Status ControlPlaneService::ListNodes(grpc::ServerContext* ctx, const v1::ListNodesRequest*,
                                            v1::ListNodesResponse* resp) {
  if (grpc::Status s = Authorize(ctx); !s.ok()) return s;
  *resp = controller_->ListNodes();
  return grpc::Status::OK;
}

grpc::Status ControlPlaneService::GetRoutes(grpc::ServerContext* ctx,
                                            const v1::GetRoutesRequest* req,
                                            v1::GetRoutesResponse* resp) {
  if (grpc::Status s = Authorize(ctx); !s.ok()) return s;
  *resp = controller_->GetRoutes(req->function());
  return grpc::Status::OK;
}

grpc::Status ControlPlaneService::GetUsage(grpc::ServerContext* ctx, const v1::GetUsageRequest* req,
                                           v1::GetUsageResponse* resp) {
  if (grpc::Status s = Authorize(ctx); !s.ok()) return s;
  absl::StatusOr<v1::GetUsageResponse> out = controller_->GetUsage(*req);
  if (!out.ok()) return ToGrpc(out.status());
  *resp = *std::move(out);
  return grpc::Status::OK;
}

grpc::Status ControlPlaneService::WatchRoutes(grpc::ServerContext* ctx,
                                              const v1::WatchRoutesRequest* req,
                                              grpc::ServerWriter<v1::RouteUpdate>* writer) {
  if (grpc::Status s = Authorize(ctx); !s.ok()) return s;
  v1::RouteUpdate update = controller_->RouteChangesSince(-1, req->function());
  int64_t revision = update.revision();
  if (!writer->Write(update)) return grpc::Status::OK;
  // Wake at least twice a second to notice cancellation (client gone, server shutting down).
  while (!ctx->IsCancelled()) {
    if (controller_->WaitForRouteChange(revision, 500) <= revision) continue;
    update = controller_->RouteChangesSince(revision, req->function());
    revision = update.revision();
    if (update.functions_size() > 0 && !writer->Write(update)) break;
  }
  return grpc::Status::OK;
}

grpc::Status AgentServiceImpl::Connect(
    grpc::ServerContext* ctx,
    grpc::ServerReaderWriter<v1::ControlMessage, v1::AgentMessage>* stream) {
  v1::AgentMessage first;
  if (!stream->Read(&first)) return grpc::Status::OK;
  if (!first.has_register_()) {
    return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                        "the first message on the stream must be Register");
  }
  QueueChannel channel;
  absl::StatusOr<int64_t> session = controller_->RegisterAgent(first.register_(), &channel);
  if (!session.ok()) return ToGrpc(session.status());
  std::thread writer([&] {
    v1::ControlMessage msg;
    while (channel.Pop(&msg)) {
      if (!stream->Write(msg)) {
        ctx->TryCancel();  // unblocks Read below
        break;
      }
    }
  });
  v1::AgentMessage msg;
  grpc::Status result = grpc::Status::OK;
  while (stream->Read(&msg)) {
    absl::Status s = controller_->HandleAgentMessage(*session, msg);
    if (!s.ok()) {
      result = ToGrpc(s);
      break;
    }
  }
  controller_->AgentDisconnected(*session);
  channel.Close();
  writer.join();
  return result;
}

}  // namespace ferry::control
