// bare-echo: the HTTP ceiling of a machine. A Boost.Beast HTTP/1.1 server that answers every
// request with its own body: no routing, no JSON, no batching, no metrics; keep-alive. What
// ferry-agent reaches against this server is the fraction of the machine's loopback HTTP
// throughput that ferry's own work leaves.
//
//   bare-echo [--port 0] [--threads 1]
// prints "bare-echo: listening PORT" on stdout once it accepts, and runs until killed.
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <thread>
#include <vector>

// clang-format off
// <utility> before Asio: Boost 1.74 under C++20 needs it.
#include <utility>
#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
// clang-format on
#include <vector>

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

namespace {

class Session : public std::enable_shared_from_this<Session> {
 public:
  explicit Session(tcp::socket socket) : socket_(std::move(socket)) {}

  void Start() { Read(); }

 private:
  void Read() {
    request_ = {};
    http::async_read(socket_, buffer_, request_,
                     [self = shared_from_this()](beast::error_code ec, size_t) {
                       if (ec) return self->Close();
                       self->Respond();
                     });
  }

  void Respond() {
    response_ = {};
    response_.version(request_.version());
    response_.result(http::status::ok);
    response_.set(http::field::content_type, "application/octet-stream");
    response_.keep_alive(request_.keep_alive());
    response_.body() = std::move(request_.body());
    response_.prepare_payload();
    http::async_write(socket_, response_,
                      [self = shared_from_this()](beast::error_code ec, size_t) {
                        if (ec || !self->response_.keep_alive()) return self->Close();
                        self->Read();
                      });
  }

  void Close() {
    beast::error_code ignored;
    socket_.shutdown(tcp::socket::shutdown_send, ignored);
  }

  tcp::socket socket_;
  beast::flat_buffer buffer_;
  http::request<http::string_body> request_;
  http::response<http::string_body> response_;
};

void Accept(tcp::acceptor& acceptor) {
  acceptor.async_accept([&acceptor](beast::error_code ec, tcp::socket socket) {
    if (!ec) {
      socket.set_option(tcp::no_delay(true));
      std::make_shared<Session>(std::move(socket))->Start();
    }
    Accept(acceptor);
  });
}

}  // namespace

int main(int argc, char** argv) {
  int port = 0;
  int threads = 1;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if ((arg == "--port" || arg == "--threads") && i + 1 < argc) {
      int value = std::atoi(argv[++i]);
      (arg == "--port" ? port : threads) = value;
    } else {
      std::fprintf(stderr, "usage: bare-echo [--port N] [--threads N]\n");
      return 2;
    }
  }
  if (threads < 1 || port < 0 || port > 65535) {
    std::fprintf(stderr, "bare-echo: bad --port or --threads\n");
    return 2;
  }
  // One io_context per thread, each with its own acceptor on the same port (SO_REUSEPORT), as
  // ferry-agent runs one io_context per HTTP thread.
  std::vector<std::unique_ptr<asio::io_context>> contexts;
  std::vector<std::unique_ptr<tcp::acceptor>> acceptors;
  tcp::endpoint endpoint(asio::ip::make_address("127.0.0.1"), static_cast<uint16_t>(port));
  for (int t = 0; t < threads; ++t) {
    contexts.push_back(std::make_unique<asio::io_context>(1));
    auto acceptor = std::make_unique<tcp::acceptor>(*contexts.back());
    acceptor->open(endpoint.protocol());
    acceptor->set_option(asio::socket_base::reuse_address(true));
    int one = 1;
    ::setsockopt(acceptor->native_handle(), SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
    acceptor->bind(endpoint);
    acceptor->listen(asio::socket_base::max_listen_connections);
    endpoint = acceptor->local_endpoint();  // the ephemeral port, for the next threads
    Accept(*acceptor);
    acceptors.push_back(std::move(acceptor));
  }
  std::printf("bare-echo: listening %d\n", endpoint.port());
  std::fflush(stdout);
  std::vector<std::thread> workers;
  for (int t = 1; t < threads; ++t) workers.emplace_back([&, t] { contexts[t]->run(); });
  contexts[0]->run();
  for (auto& w : workers) w.join();
  return 0;
}
