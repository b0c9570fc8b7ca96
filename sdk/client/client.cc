// ferry::Client transport: one keep-alive HTTP/1.1 connection over Boost.Beast (synchronous
// API, run as async operations on a private io_context so that every phase has a timeout), and
// gRPC stubs for the data and control planes.
#include <atomic>
#include <chrono>
#include <optional>
#include <string>

// clang-format off
// Boost 1.74's Asio uses std::exchange without including <utility> under C++20: keep it first.
#include <utility>
#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
// clang-format on

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "ferry/client.h"
#include "grpcpp/grpcpp.h"

namespace ferry {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using nlohmann::json;

// Debian's abseil has its own string_view, which StrCat takes: the helpers here use it.
absl::StatusOr<std::pair<std::string, std::string>> SplitAddress(absl::string_view address,
                                                                 absl::string_view what) {
  absl::string_view rest = address;
  if (absl::ConsumePrefix(&rest, "https://")) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " '", address, "': https is not supported"));
  }
  absl::ConsumePrefix(&rest, "http://");
  rest = rest.substr(0, rest.find('/'));
  const size_t colon = rest.rfind(':');
  if (colon == absl::string_view::npos || colon == 0 || colon + 1 == rest.size()) {
    return absl::InvalidArgumentError(absl::StrCat(what, " '", address, "' is not host:port"));
  }
  std::string host(rest.substr(0, colon));
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  int port = 0;
  if (!absl::SimpleAtoi(rest.substr(colon + 1), &port) || port <= 0 || port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat(what, " '", address, "' has no valid port"));
  }
  return std::make_pair(host, std::string(rest.substr(colon + 1)));
}

absl::Status FromGrpc(const grpc::Status& s) {
  if (s.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()), s.error_message());
}

std::string ModelPath(std::string_view model, std::string_view version) {
  std::string path = absl::StrCat("/v2/models/", EscapePathSegment(model));
  if (!version.empty()) absl::StrAppend(&path, "/versions/", EscapePathSegment(version));
  return path;
}

absl::StatusOr<json> ParseJsonReply(const HttpReply& reply, absl::string_view what) {
  if (reply.status / 100 != 2) return StatusFromHttp(reply.status, reply.body);
  json j = json::parse(reply.body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) {
    return absl::InternalError(absl::StrCat(what, ": the server's answer is not JSON"));
  }
  return j;
}

absl::StatusOr<std::vector<TensorSpec>> SpecsFromJson(const json& list, absl::string_view what) {
  std::vector<TensorSpec> out;
  if (!list.is_array()) return absl::InternalError(absl::StrCat(what, " is not an array"));
  try {
    for (const json& t : list) {
      out.push_back({.name = t.at("name").get<std::string>(),
                     .dtype = DataTypeFromName(t.at("datatype").get<std::string>()),
                     .shape = t.at("shape").get<std::vector<int64_t>>()});
    }
  } catch (const json::exception& e) {
    return absl::InternalError(absl::StrCat(what, ": ", e.what()));
  }
  return out;
}

}  // namespace

// One keep-alive connection. Not thread-safe: Client serialises calls with http_mu_.
class Client::HttpConnection {
 public:
  HttpConnection(std::string host, std::string port, const ClientOptions& options,
                 std::atomic<int64_t>* opened)
      : host_(std::move(host)),
        port_(std::move(port)),
        host_header_(absl::StrCat(host_.find(':') != std::string::npos ? "[" : "", host_,
                                  host_.find(':') != std::string::npos ? "]" : "", ":", port_)),
        options_(options),
        opened_(opened) {}

  absl::StatusOr<HttpReply> Send(const HttpRequest& request) {
    for (int attempt = 0;; ++attempt) {
      const bool reused = stream_.has_value();
      if (!reused) {
        if (absl::Status s = Connect(); !s.ok()) return s;
      }
      bool stale = false;
      auto reply = RoundTrip(request, &stale);
      if (reply.ok()) return reply;
      Close();
      // Only a connection the server had already closed is retried, and only once: the
      // request never reached it.
      if (!(reused && stale && attempt == 0)) return reply;
    }
  }

 private:
  // Runs the posted asynchronous operation(s) until done; the stream's expiry bounds it.
  void Run() {
    ioc_.restart();
    ioc_.run();
  }

  absl::Status Connect() {
    beast::error_code ec;
    if (endpoints_.empty()) {
      asio::ip::tcp::resolver resolver(ioc_);
      endpoints_ = resolver.resolve(host_, port_, ec);
      if (ec) {
        return absl::UnavailableError(
            absl::StrCat("cannot resolve ", host_header_, ": ", ec.message()));
      }
    }
    stream_.emplace(ioc_);
    buffer_.consume(buffer_.size());
    stream_->expires_after(std::chrono::milliseconds(options_.connect_timeout_ms));
    stream_->async_connect(endpoints_, [&ec](beast::error_code e, const auto&) { ec = e; });
    Run();
    if (ec) {
      stream_.reset();
      return absl::UnavailableError(
          absl::StrCat("cannot connect to ", host_header_, ": ",
                       ec == beast::error::timeout ? "timed out" : ec.message()));
    }
    stream_->socket().set_option(asio::ip::tcp::no_delay(true), ec);
    opened_->fetch_add(1, std::memory_order_relaxed);
    return absl::OkStatus();
  }

  void Close() {
    if (!stream_) return;
    beast::error_code ec;
    stream_->socket().shutdown(asio::ip::tcp::socket::shutdown_both, ec);
    stream_->socket().close(ec);
    stream_.reset();
  }

  absl::StatusOr<HttpReply> RoundTrip(const HttpRequest& request, bool* stale) {
    head_.clear();
    absl::StrAppend(&head_, request.method, " ", request.target,
                    " HTTP/1.1\r\nHost: ", host_header_, "\r\n");
    if (!request.content_type.empty()) {
      absl::StrAppend(&head_, "Content-Type: ", request.content_type, "\r\n");
    }
    if (request.header_length >= 0) {
      absl::StrAppend(&head_, "Inference-Header-Content-Length: ", request.header_length, "\r\n");
    }
    if (!request.body.empty() || request.method == "POST" || request.method == "PUT") {
      absl::StrAppend(&head_, "Content-Length: ", request.body.size(), "\r\n");
    }
    head_.append("\r\n");

    stream_->expires_after(std::chrono::milliseconds(options_.timeout_ms));
    beast::error_code ec;
    const std::array<asio::const_buffer, 2> buffers = {asio::buffer(head_),
                                                       asio::buffer(request.body)};
    asio::async_write(*stream_, buffers, [&ec](beast::error_code e, size_t) { ec = e; });
    Run();
    if (ec) {
      *stale = ec != beast::error::timeout;
      return Failed("sending to", ec);
    }
    http::response_parser<http::string_body> parser;
    parser.body_limit(static_cast<uint64_t>(options_.max_response_bytes));
    http::async_read(*stream_, buffer_, parser, [&ec](beast::error_code e, size_t) { ec = e; });
    Run();
    if (ec) {
      *stale = !parser.got_some() &&
               (ec == http::error::end_of_stream || ec == asio::error::eof ||
                ec == asio::error::connection_reset || ec == asio::error::broken_pipe);
      if (ec == http::error::body_limit) {
        return absl::ResourceExhaustedError(absl::StrCat("the answer from ", host_header_,
                                                         " is larger than max_response_bytes (",
                                                         options_.max_response_bytes, ")"));
      }
      return Failed("reading from", ec);
    }
    auto& res = parser.get();
    HttpReply reply;
    reply.status = static_cast<int>(res.result_int());
    if (auto it = res.find(http::field::content_type); it != res.end()) {
      reply.content_type = std::string(it->value());
    }
    if (auto it = res.find("Inference-Header-Content-Length"); it != res.end()) {
      int64_t n = -1;
      if (!absl::SimpleAtoi(absl::string_view(it->value().data(), it->value().size()), &n) ||
          n < 0) {
        Close();
        return absl::InternalError(
            absl::StrCat(host_header_, " answered a bad Inference-Header-Content-Length"));
      }
      reply.header_length = n;
    }
    const bool keep_alive = res.keep_alive();
    reply.body = std::move(res.body());
    if (!keep_alive) Close();
    return reply;
  }

  absl::Status Failed(absl::string_view doing, const beast::error_code& ec) {
    if (ec == beast::error::timeout) {
      return absl::DeadlineExceededError(
          absl::StrCat(host_header_, " did not answer within ", options_.timeout_ms, " ms"));
    }
    return absl::UnavailableError(
        absl::StrCat("connection lost ", doing, " ", host_header_, ": ", ec.message()));
  }

  const std::string host_;
  const std::string port_;
  const std::string host_header_;
  const ClientOptions& options_;
  std::atomic<int64_t>* const opened_;
  asio::io_context ioc_{1};
  asio::ip::tcp::resolver::results_type endpoints_;
  std::optional<beast::tcp_stream> stream_;
  beast::flat_buffer buffer_;
  std::string head_;
};

Client::Client(const ClientOptions& options) : options_(options) {}
Client::~Client() = default;

absl::StatusOr<std::unique_ptr<Client>> Client::Create(const ClientOptions& options) {
  if (options.timeout_ms <= 0 || options.connect_timeout_ms <= 0) {
    return absl::InvalidArgumentError("timeout_ms and connect_timeout_ms must be positive");
  }
  if (options.max_response_bytes <= 0 || options.max_grpc_message_bytes <= 0 ||
      options.max_grpc_message_bytes > std::numeric_limits<int>::max()) {
    return absl::InvalidArgumentError("max_response_bytes / max_grpc_message_bytes out of range");
  }
  std::unique_ptr<Client> client(new Client(options));
  if (!options.http_address.empty()) {
    auto hp = SplitAddress(options.http_address, "http_address");
    if (!hp.ok()) return hp.status();
    absl::MutexLock lock(&client->http_mu_);
    client->http_ = std::make_unique<HttpConnection>(hp->first, hp->second, client->options_,
                                                     &client->http_connections_opened_);
  }
  if (!options.grpc_address.empty()) {
    if (auto hp = SplitAddress(options.grpc_address, "grpc_address"); !hp.ok()) {
      return hp.status();
    }
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(static_cast<int>(options.max_grpc_message_bytes));
    args.SetMaxSendMessageSize(static_cast<int>(options.max_grpc_message_bytes));
    client->grpc_ = inference::GRPCInferenceService::NewStub(
        grpc::CreateCustomChannel(options.grpc_address, grpc::InsecureChannelCredentials(), args));
  }
  if (!options.control_address.empty()) {
    if (auto hp = SplitAddress(options.control_address, "control_address"); !hp.ok()) {
      return hp.status();
    }
    client->control_ = control::v1::ControlPlane::NewStub(
        grpc::CreateChannel(options.control_address, grpc::InsecureChannelCredentials()));
  }
  return client;
}

int64_t Client::http_connections_opened() const {
  return http_connections_opened_.load(std::memory_order_relaxed);
}

absl::StatusOr<HttpReply> Client::SendRaw(const HttpRequest& request) {
  absl::MutexLock lock(&http_mu_);
  if (http_ == nullptr) {
    return absl::FailedPreconditionError("this client has no http_address");
  }
  return http_->Send(request);
}

absl::StatusOr<HttpReply> Client::Get(std::string target) {
  HttpRequest request;
  request.method = "GET";
  request.target = std::move(target);
  return SendRaw(request);
}

std::unique_ptr<grpc::ClientContext> Client::DataContext() const {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(std::chrono::system_clock::now() +
                    std::chrono::milliseconds(options_.timeout_ms));
  return ctx;
}

std::unique_ptr<grpc::ClientContext> Client::NewControlContext() const {
  auto ctx = DataContext();
  if (!options_.admin_token.empty()) {
    ctx->AddMetadata("authorization", absl::StrCat("Bearer ", options_.admin_token));
  }
  return ctx;
}

absl::Status Client::NeedGrpc() const {
  return grpc_ != nullptr ? absl::OkStatus()
                          : absl::FailedPreconditionError("this client has no grpc_address");
}

absl::Status Client::NeedControl() const {
  return control_ != nullptr ? absl::OkStatus()
                             : absl::FailedPreconditionError("this client has no control_address");
}

absl::StatusOr<inference::ModelInferResponse> Client::SendGrpcRaw(
    const inference::ModelInferRequest& request) {
  if (absl::Status s = NeedGrpc(); !s.ok()) return s;
  inference::ModelInferResponse response;
  auto ctx = DataContext();
  if (absl::Status s = FromGrpc(grpc_->ModelInfer(ctx.get(), request, &response)); !s.ok()) {
    return s;
  }
  return response;
}

absl::StatusOr<InferenceResponse> Client::Infer(const InferenceRequest& request,
                                                InferProtocol protocol) {
  if (protocol == InferProtocol::kGrpc) {
    auto encoded = EncodeGrpcInfer(request);
    if (!encoded.ok()) return encoded.status();
    auto reply = SendGrpcRaw(*encoded);
    if (!reply.ok()) return reply.status();
    return DecodeGrpcInfer(*reply);
  }
  auto encoded = EncodeHttpInfer(request, protocol);
  if (!encoded.ok()) return encoded.status();
  auto reply = SendRaw(*encoded);
  if (!reply.ok()) return reply.status();
  return DecodeHttpInfer(*reply);
}

absl::StatusOr<json> Client::Predict(std::string_view model, const json& body) {
  auto reply = SendRaw(EncodePredict(model, body.dump()));
  if (!reply.ok()) return reply.status();
  return ParseJsonReply(*reply, "predict");
}

absl::StatusOr<ModelInfo> Client::ModelMetadata(std::string_view model, std::string_view version,
                                                bool use_grpc) {
  ModelInfo info;
  if (use_grpc) {
    if (absl::Status s = NeedGrpc(); !s.ok()) return s;
    inference::ModelMetadataRequest req;
    req.set_name(std::string(model));
    req.set_version(std::string(version));
    inference::ModelMetadataResponse res;
    auto ctx = DataContext();
    if (absl::Status s = FromGrpc(grpc_->ModelMetadata(ctx.get(), req, &res)); !s.ok()) return s;
    info.name = res.name();
    info.versions.assign(res.versions().begin(), res.versions().end());
    info.platform = res.platform();
    for (const auto& t : res.inputs()) {
      info.inputs.push_back({t.name(), DataTypeFromName(t.datatype()),
                             std::vector<int64_t>(t.shape().begin(), t.shape().end())});
    }
    for (const auto& t : res.outputs()) {
      info.outputs.push_back({t.name(), DataTypeFromName(t.datatype()),
                              std::vector<int64_t>(t.shape().begin(), t.shape().end())});
    }
    return info;
  }
  auto reply = Get(ModelPath(model, version));
  if (!reply.ok()) return reply.status();
  auto j = ParseJsonReply(*reply, "model metadata");
  if (!j.ok()) return j.status();
  try {
    info.name = j->at("name").get<std::string>();
    if (j->contains("versions")) info.versions = (*j)["versions"].get<std::vector<std::string>>();
    if (j->contains("platform")) info.platform = (*j)["platform"].get<std::string>();
  } catch (const json::exception& e) {
    return absl::InternalError(absl::StrCat("model metadata: ", e.what()));
  }
  auto inputs = SpecsFromJson(j->value("inputs", json::array()), "model metadata inputs");
  if (!inputs.ok()) return inputs.status();
  auto outputs = SpecsFromJson(j->value("outputs", json::array()), "model metadata outputs");
  if (!outputs.ok()) return outputs.status();
  info.inputs = *std::move(inputs);
  info.outputs = *std::move(outputs);
  return info;
}

namespace {
// 200 -> true, 503 -> false, anything else its error.
absl::StatusOr<bool> ReadyFromHttp(const absl::StatusOr<HttpReply>& reply) {
  if (!reply.ok()) return reply.status();
  if (reply->status == 200) return true;
  if (reply->status == 503) return false;
  return StatusFromHttp(reply->status, reply->body);
}
}  // namespace

absl::StatusOr<bool> Client::ModelReady(std::string_view model, std::string_view version,
                                        bool use_grpc) {
  if (use_grpc) {
    if (absl::Status s = NeedGrpc(); !s.ok()) return s;
    inference::ModelReadyRequest req;
    req.set_name(std::string(model));
    req.set_version(std::string(version));
    inference::ModelReadyResponse res;
    auto ctx = DataContext();
    if (absl::Status s = FromGrpc(grpc_->ModelReady(ctx.get(), req, &res)); !s.ok()) return s;
    return res.ready();
  }
  return ReadyFromHttp(Get(ModelPath(model, version) + "/ready"));
}

absl::StatusOr<bool> Client::ServerLive(bool use_grpc) {
  if (use_grpc) {
    if (absl::Status s = NeedGrpc(); !s.ok()) return s;
    inference::ServerLiveResponse res;
    auto ctx = DataContext();
    if (absl::Status s = FromGrpc(grpc_->ServerLive(ctx.get(), {}, &res)); !s.ok()) return s;
    return res.live();
  }
  return ReadyFromHttp(Get("/v2/health/live"));
}

absl::StatusOr<bool> Client::ServerReady(bool use_grpc) {
  if (use_grpc) {
    if (absl::Status s = NeedGrpc(); !s.ok()) return s;
    inference::ServerReadyResponse res;
    auto ctx = DataContext();
    if (absl::Status s = FromGrpc(grpc_->ServerReady(ctx.get(), {}, &res)); !s.ok()) return s;
    return res.ready();
  }
  return ReadyFromHttp(Get("/v2/health/ready"));
}

absl::StatusOr<control::v1::ApplyResponse> Client::Apply(const std::vector<ManifestText>& files,
                                                         bool dry_run) {
  if (absl::Status s = NeedControl(); !s.ok()) return s;
  control::v1::ApplyRequest req;
  for (const ManifestText& f : files) {
    auto* mf = req.add_files();
    mf->set_path(f.path);
    mf->set_content(f.content);
  }
  req.set_dry_run(dry_run);
  control::v1::ApplyResponse res;
  auto ctx = NewControlContext();
  if (absl::Status s = FromGrpc(control_->Apply(ctx.get(), req, &res)); !s.ok()) return s;
  return res;
}

absl::StatusOr<control::v1::ListFunctionsResponse> Client::ListFunctions() {
  if (absl::Status s = NeedControl(); !s.ok()) return s;
  control::v1::ListFunctionsResponse res;
  auto ctx = NewControlContext();
  if (absl::Status s = FromGrpc(control_->ListFunctions(ctx.get(), {}, &res)); !s.ok()) return s;
  return res;
}

absl::StatusOr<control::v1::FunctionStatus> Client::GetFunction(std::string_view name) {
  if (absl::Status s = NeedControl(); !s.ok()) return s;
  control::v1::GetFunctionRequest req;
  req.set_name(std::string(name));
  control::v1::FunctionStatus res;
  auto ctx = NewControlContext();
  if (absl::Status s = FromGrpc(control_->GetFunction(ctx.get(), req, &res)); !s.ok()) return s;
  return res;
}

absl::StatusOr<control::v1::ListNodesResponse> Client::ListNodes() {
  if (absl::Status s = NeedControl(); !s.ok()) return s;
  control::v1::ListNodesResponse res;
  auto ctx = NewControlContext();
  if (absl::Status s = FromGrpc(control_->ListNodes(ctx.get(), {}, &res)); !s.ok()) return s;
  return res;
}

absl::StatusOr<std::vector<control::v1::Replica>> Client::ListReplicas(std::string_view function) {
  auto f = GetFunction(function);
  if (!f.ok()) return f.status();
  return std::vector<control::v1::Replica>(f->replicas().begin(), f->replicas().end());
}

absl::StatusOr<control::v1::GetRoutesResponse> Client::GetRoutes(std::string_view function) {
  if (absl::Status s = NeedControl(); !s.ok()) return s;
  control::v1::GetRoutesRequest req;
  req.set_function(std::string(function));
  control::v1::GetRoutesResponse res;
  auto ctx = NewControlContext();
  if (absl::Status s = FromGrpc(control_->GetRoutes(ctx.get(), req, &res)); !s.ok()) return s;
  return res;
}

absl::StatusOr<control::v1::DeleteFunctionResponse> Client::DeleteFunction(std::string_view name) {
  if (absl::Status s = NeedControl(); !s.ok()) return s;
  control::v1::DeleteFunctionRequest req;
  req.set_name(std::string(name));
  control::v1::DeleteFunctionResponse res;
  auto ctx = NewControlContext();
  if (absl::Status s = FromGrpc(control_->DeleteFunction(ctx.get(), req, &res)); !s.ok()) {
    return s;
  }
  return res;
}

}  // namespace ferry
