// gRPC transport of ferry-loadgen: KServe v2 ModelInfer through grpc::GenericStub with the
// request serialized once (a ByteBuffer shares its slices, so each call sends the same bytes
// without re-encoding), and one completion queue that this thread polls with the next
// scheduled send as its deadline. Calls are multiplexed over `connections` channels, each its
// own TCP connection.
#include <grpc/support/time.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>

#include <deque>
#include <memory>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "perf/loadgen/driver.h"
#include "perf/loadgen/schedule.h"

namespace ferry::loadgen {
namespace {

constexpr char kMethod[] = "/inference.GRPCInferenceService/ModelInfer";

std::string CodeName(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::CANCELLED:
      return "CANCELLED";
    case grpc::StatusCode::UNKNOWN:
      return "UNKNOWN";
    case grpc::StatusCode::INVALID_ARGUMENT:
      return "INVALID_ARGUMENT";
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return "DEADLINE_EXCEEDED";
    case grpc::StatusCode::NOT_FOUND:
      return "NOT_FOUND";
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return "RESOURCE_EXHAUSTED";
    case grpc::StatusCode::FAILED_PRECONDITION:
      return "FAILED_PRECONDITION";
    case grpc::StatusCode::UNIMPLEMENTED:
      return "UNIMPLEMENTED";
    case grpc::StatusCode::INTERNAL:
      return "INTERNAL";
    case grpc::StatusCode::UNAVAILABLE:
      return "UNAVAILABLE";
    default:
      return absl::StrCat(static_cast<int>(code));
  }
}

std::shared_ptr<grpc::Channel> MakeChannel(const Options& o, int index) {
  grpc::ChannelArguments args;
  // A private subchannel pool and a distinct argument per channel: otherwise gRPC shares one
  // TCP connection between channels to the same address.
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  args.SetInt("ferry.loadgen.channel", index);
  args.SetMaxReceiveMessageSize(-1);
  return grpc::CreateCustomChannel(absl::StrCat(o.host, ":", o.port),
                                   grpc::InsecureChannelCredentials(), args);
}

grpc::ByteBuffer ToByteBuffer(const std::string& bytes) {
  grpc::Slice slice(bytes);
  return grpc::ByteBuffer(&slice, 1);
}

struct Call {
  grpc::ClientContext context;
  grpc::ByteBuffer response;
  grpc::Status status;
  std::unique_ptr<grpc::GenericClientAsyncResponseReader> reader;
  int64_t scheduled_ns = 0;
};

class GrpcRun {
 public:
  GrpcRun(const Options& o, const DriverConfig& c, const std::string& request)
      : c_(c),
        request_(ToByteBuffer(request)),
        schedule_(c.arrivals, c.rate_per_s > 0 ? c.rate_per_s : 1.0, c.seed, c.phase),
        window_begin_(c.start_ns + c.warmup_ns),
        window_end_(window_begin_ + c.duration_ns) {
    for (int i = 0; i < c.connections; ++i) {
      channels_.push_back(MakeChannel(o, static_cast<int>(c.seed) * 1000 + i));
      stubs_.push_back(std::make_unique<grpc::GenericStub>(channels_.back()));
    }
  }

  DriverResult Run() {
    for (auto& channel : channels_) channel->GetState(/*try_to_connect=*/true);
    result_.connections_opened = static_cast<int64_t>(channels_.size());
    int64_t drain_deadline = window_end_ + c_.drain_ns;
    if (c_.mode == Mode::kClosed) {
      for (int i = 0; i < c_.connections; ++i) Start(NowNs());
    } else {
      next_due_ = c_.start_ns + schedule_.Next();
    }
    while (true) {
      if (c_.mode == Mode::kOpen && !schedule_done_) {
        int64_t now = NowNs();
        while (next_due_ <= now) {
          if (next_due_ >= window_end_) {
            schedule_done_ = true;
            break;
          }
          Start(next_due_);
          next_due_ = c_.start_ns + schedule_.Next();
        }
      }
      bool done = c_.mode == Mode::kOpen ? schedule_done_ && in_flight_.empty()
                                         : NowNs() >= window_end_ && in_flight_.empty();
      if (done) break;
      int64_t deadline = drain_deadline;
      if (c_.mode == Mode::kOpen && !schedule_done_) deadline = std::min(deadline, next_due_);
      void* tag = nullptr;
      bool ok = false;
      // gRPC's own monotonic clock: its C++ deadlines only convert system_clock time points.
      gpr_timespec until =
          gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                       gpr_time_from_nanos(std::max<int64_t>(0, deadline - NowNs()), GPR_TIMESPAN));
      auto got = cq_.AsyncNext(&tag, &ok, until);
      if (got == grpc::CompletionQueue::SHUTDOWN) break;
      if (got == grpc::CompletionQueue::TIMEOUT) {
        if (NowNs() >= drain_deadline) break;
        continue;
      }
      OnDone(static_cast<Call*>(tag));
    }
    for (Call* call : in_flight_) {
      if (InWindow(call->scheduled_ns)) ++result_.errors["timeout"];
      call->context.TryCancel();
    }
    // Collect the cancelled calls before the queue goes away.
    while (!in_flight_.empty()) {
      void* tag = nullptr;
      bool ok = false;
      if (!cq_.Next(&tag, &ok)) break;
      Call* call = static_cast<Call*>(tag);
      in_flight_.erase(call);
      delete call;
    }
    cq_.Shutdown();
    void* tag;
    bool ok;
    while (cq_.Next(&tag, &ok)) {
    }
    return std::move(result_);
  }

 private:
  bool InWindow(int64_t t) const { return t >= window_begin_ && t < window_end_; }

  void Start(int64_t scheduled_ns) {
    int64_t now = NowNs();
    if (InWindow(scheduled_ns)) {
      ++result_.sent;
      if (c_.mode == Mode::kOpen) {  // closed loop sends when it is ready: never late
        int64_t lateness = now - scheduled_ns;
        if (lateness > c_.late_ns) ++result_.late;
        result_.max_late_ns = std::max(result_.max_late_ns, lateness);
      }
    }
    auto* call = new Call;
    call->scheduled_ns = scheduled_ns;
    grpc::GenericStub& stub = *stubs_[next_stub_++ % stubs_.size()];
    call->reader = stub.PrepareUnaryCall(&call->context, kMethod, request_, &cq_);
    call->reader->StartCall();
    call->reader->Finish(&call->response, &call->status, call);
    in_flight_.insert(call);
  }

  void OnDone(Call* call) {
    int64_t now = NowNs();
    in_flight_.erase(call);
    bool ok = call->status.ok();
    if (ok && now >= window_begin_ && now < window_end_) ++result_.ok_in_window;
    if (InWindow(call->scheduled_ns)) {
      if (ok) {
        result_.latencies_ns.push_back(now - call->scheduled_ns);
      } else {
        ++result_.errors[absl::StrCat("grpc_", CodeName(call->status.error_code()))];
      }
    }
    delete call;
    if (c_.mode == Mode::kClosed && now < window_end_) Start(now);
  }

  static int64_t NowNs() { return ToNs(Clock::now()); }

  const DriverConfig c_;
  grpc::ByteBuffer request_;
  std::vector<std::shared_ptr<grpc::Channel>> channels_;
  std::vector<std::unique_ptr<grpc::GenericStub>> stubs_;
  size_t next_stub_ = 0;
  grpc::CompletionQueue cq_;
  ArrivalSchedule schedule_;
  const int64_t window_begin_;
  const int64_t window_end_;
  int64_t next_due_ = 0;
  bool schedule_done_ = false;
  absl::flat_hash_set<Call*> in_flight_;
  DriverResult result_;
};

}  // namespace

DriverResult RunGrpc(const Options& o, const DriverConfig& config, const std::string& request) {
  GrpcRun run(o, config, request);
  return run.Run();
}

absl::StatusOr<std::string> GrpcOnce(const Options& o, const std::string& request) {
  auto channel = MakeChannel(o, -1);
  grpc::GenericStub stub(channel);
  grpc::CompletionQueue cq;
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  grpc::ByteBuffer response;
  grpc::Status status;
  auto reader = stub.PrepareUnaryCall(&context, kMethod, ToByteBuffer(request), &cq);
  reader->StartCall();
  int tag = 1;
  reader->Finish(&response, &status, &tag);
  void* got = nullptr;
  bool ok = false;
  cq.Next(&got, &ok);
  cq.Shutdown();
  void* ignored_tag;
  while (cq.Next(&ignored_tag, &ok)) {
  }
  if (!status.ok()) {
    return absl::UnavailableError(
        absl::StrCat("ModelInfer: ", CodeName(status.error_code()), " ", status.error_message()));
  }
  std::vector<grpc::Slice> slices;
  if (!response.Dump(&slices).ok()) return absl::DataLossError("unreadable response");
  std::string out;
  for (const auto& s : slices) out.append(reinterpret_cast<const char*>(s.begin()), s.size());
  return out;
}

}  // namespace ferry::loadgen
