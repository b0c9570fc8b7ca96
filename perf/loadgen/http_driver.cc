// HTTP/1.1 transport of ferry-loadgen on Boost.Beast. One io_context per thread drives every
// connection of that thread; requests are pre-encoded bytes written as-is, answers parsed with
// Beast's response parser.
//
// Why not ferry::Client's connection: that client is synchronous (one blocking call per
// thread), so an open-loop generator on it would need one thread per request in flight, and a
// server that falls behind would stall the schedule: exactly the coordinated omission this tool
// exists to avoid. Here the schedule and hundreds of connections share one event loop.
#include <deque>
#include <memory>
#include <optional>

// clang-format off
// <utility> before Asio: Boost 1.74 under C++20 needs it.
#include <utility>
#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
// clang-format on

#include "absl/strings/str_cat.h"
#include "perf/loadgen/driver.h"
#include "perf/loadgen/schedule.h"

namespace ferry::loadgen {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

constexpr uint64_t kBodyLimitBytes = 256ull << 20;

Clock::time_point FromNs(int64_t ns) { return Clock::time_point(std::chrono::nanoseconds(ns)); }
int64_t NowNs() { return ToNs(Clock::now()); }

std::string TransportKind(const beast::error_code& ec) {
  if (ec == http::error::end_of_stream || ec == asio::error::eof) return "transport_eof";
  if (ec == asio::error::connection_reset) return "transport_reset";
  if (ec == asio::error::connection_refused) return "transport_refused";
  if (ec == asio::error::broken_pipe) return "transport_broken_pipe";
  if (ec.category().name() == std::string_view("beast.http")) {
    return "transport_bad_response";
  }
  return "transport_other";
}

class HttpRun {
 public:
  HttpRun(const Options& o, const DriverConfig& c, std::shared_ptr<const std::string> request)
      : c_(c),
        request_(std::move(request)),
        endpoint_(asio::ip::make_address(o.host), static_cast<uint16_t>(o.port)),
        timer_(io_),
        drain_timer_(io_),
        schedule_(c.arrivals, c.rate_per_s > 0 ? c.rate_per_s : 1.0, c.seed, c.phase),
        window_begin_(c.start_ns + c.warmup_ns),
        window_end_(window_begin_ + c.duration_ns) {}

  DriverResult Run() {
    for (int i = 0; i < c_.connections; ++i) Open(NewConn());
    if (c_.mode == Mode::kOpen) {
      next_due_ = c_.start_ns + schedule_.Next();
      ArmTimer();
    }
    drain_timer_.expires_at(FromNs(window_end_ + c_.drain_ns));
    drain_timer_.async_wait([this](beast::error_code ec) {
      if (!ec) Finish(/*timed_out=*/true);
    });
    io_.run();
    return std::move(result_);
  }

 private:
  struct Conn {
    explicit Conn(asio::io_context& io) : socket(io), retry(io) {}
    tcp::socket socket;
    asio::steady_timer retry;
    beast::flat_buffer buffer;
    std::optional<http::response_parser<http::string_body>> parser;
    int64_t scheduled_ns = 0;
    bool busy = false;
  };

  bool InWindow(int64_t t) const { return t >= window_begin_ && t < window_end_; }

  Conn* NewConn() {
    conns_.push_back(std::make_unique<Conn>(io_));
    return conns_.back().get();
  }

  void Open(Conn* conn) {
    ++connecting_;
    conn->socket.async_connect(endpoint_, [this, conn](beast::error_code ec) {
      --connecting_;
      if (finished_) return;
      if (ec) {
        ++result_.errors[absl::StrCat("connect_", TransportKind(ec))];
        beast::error_code ignored;
        conn->socket.close(ignored);
        // Do not spin against a server that refuses: retry in 10 ms.
        ++connecting_;
        conn->retry.expires_after(std::chrono::milliseconds(10));
        conn->retry.async_wait([this, conn](beast::error_code ec2) {
          --connecting_;
          if (!ec2 && !finished_) Open(conn);
        });
        return;
      }
      conn->socket.set_option(tcp::no_delay(true));
      conn->buffer.clear();
      ++result_.connections_opened;
      ++open_;
      OnIdle(conn);
    });
  }

  void OnIdle(Conn* conn) {
    if (finished_) return;
    if (c_.mode == Mode::kClosed) {
      int64_t now = NowNs();
      if (now < window_end_) {
        Send(conn, now);
      } else {
        CheckDone();
      }
      return;
    }
    if (!backlog_.empty()) {
      int64_t scheduled = backlog_.front();
      backlog_.pop_front();
      Send(conn, scheduled);
      return;
    }
    idle_.push_back(conn);
    CheckDone();
  }

  void Send(Conn* conn, int64_t scheduled_ns) {
    int64_t now = NowNs();
    if (InWindow(scheduled_ns)) {
      ++result_.sent;
      if (c_.mode == Mode::kOpen) {  // closed loop sends when it is ready: never late
        int64_t lateness = now - scheduled_ns;
        if (lateness > c_.late_ns) ++result_.late;
        result_.max_late_ns = std::max(result_.max_late_ns, lateness);
      }
    }
    conn->scheduled_ns = scheduled_ns;
    conn->busy = true;
    ++in_flight_;
    asio::async_write(conn->socket, asio::buffer(*request_),
                      [this, conn](beast::error_code ec, size_t) {
                        if (finished_) return;
                        if (ec) return Fail(conn, ec);
                        conn->parser.emplace();
                        conn->parser->body_limit(kBodyLimitBytes);
                        http::async_read(conn->socket, conn->buffer, *conn->parser,
                                         [this, conn](beast::error_code ec2, size_t) {
                                           if (finished_) return;
                                           if (ec2) return Fail(conn, ec2);
                                           OnResponse(conn);
                                         });
                      });
  }

  void OnResponse(Conn* conn) {
    int64_t now = NowNs();
    const auto& response = conn->parser->get();
    int status = response.result_int();
    bool keep_alive = response.keep_alive();
    conn->busy = false;
    --in_flight_;
    if (status == 200 && now >= window_begin_ && now < window_end_) ++result_.ok_in_window;
    if (InWindow(conn->scheduled_ns)) {
      if (status == 200) {
        result_.latencies_ns.push_back(now - conn->scheduled_ns);
      } else {
        ++result_.errors[absl::StrCat("http_", status)];
      }
    }
    conn->parser.reset();
    if (!keep_alive) {
      Reopen(conn);
      return;
    }
    OnIdle(conn);
  }

  void Fail(Conn* conn, const beast::error_code& ec) {
    conn->busy = false;
    --in_flight_;
    if (InWindow(conn->scheduled_ns)) ++result_.errors[TransportKind(ec)];
    Reopen(conn);
  }

  void Reopen(Conn* conn) {
    beast::error_code ignored;
    conn->socket.close(ignored);
    --open_;
    conn->parser.reset();
    Open(conn);
    CheckDone();
  }

  void ArmTimer() {
    timer_.expires_at(FromNs(next_due_));
    timer_.async_wait([this](beast::error_code ec) {
      if (ec || finished_) return;
      OnTimer();
    });
  }

  void OnTimer() {
    int64_t now = NowNs();
    while (next_due_ <= now) {
      if (next_due_ >= window_end_) {
        schedule_done_ = true;
        break;
      }
      backlog_.push_back(next_due_);
      next_due_ = c_.start_ns + schedule_.Next();
    }
    while (!backlog_.empty() && !idle_.empty()) {
      Conn* conn = idle_.back();  // the most recently used: its cache lines are warm
      idle_.pop_back();
      int64_t scheduled = backlog_.front();
      backlog_.pop_front();
      Send(conn, scheduled);
    }
    // Every connection busy: grow the pool (HTTP/1.1 carries one request per connection), so
    // that the schedule is kept as far as the server lets it.
    while (!backlog_.empty() && connecting_ < static_cast<int>(backlog_.size()) &&
           static_cast<int>(conns_.size()) < c_.max_connections) {
      Open(NewConn());
    }
    if (schedule_done_) {
      CheckDone();
    } else {
      ArmTimer();
    }
  }

  void CheckDone() {
    if (finished_) return;
    bool done = c_.mode == Mode::kOpen ? schedule_done_ && backlog_.empty() && in_flight_ == 0
                                       : NowNs() >= window_end_ && in_flight_ == 0;
    if (done) Finish(/*timed_out=*/false);
  }

  void Finish(bool timed_out) {
    if (finished_) return;
    finished_ = true;
    if (timed_out) {
      for (const auto& conn : conns_) {
        if (conn->busy && InWindow(conn->scheduled_ns)) ++result_.errors["timeout"];
      }
      for (int64_t scheduled : backlog_) {
        if (InWindow(scheduled)) ++result_.errors["timeout_unsent"];
      }
    }
    beast::error_code ignored;
    timer_.cancel();
    drain_timer_.cancel();
    for (const auto& conn : conns_) {
      conn->retry.cancel();
      conn->socket.close(ignored);
    }
    io_.stop();
  }

  asio::io_context io_{1};
  const DriverConfig c_;
  std::shared_ptr<const std::string> request_;
  tcp::endpoint endpoint_;
  asio::steady_timer timer_;
  asio::steady_timer drain_timer_;
  ArrivalSchedule schedule_;
  const int64_t window_begin_;
  const int64_t window_end_;
  int64_t next_due_ = 0;
  bool schedule_done_ = false;
  bool finished_ = false;
  int in_flight_ = 0;
  int connecting_ = 0;
  int open_ = 0;
  std::vector<std::unique_ptr<Conn>> conns_;
  std::vector<Conn*> idle_;
  std::deque<int64_t> backlog_;  // scheduled times waiting for a connection
  DriverResult result_;
};

}  // namespace

DriverResult RunHttp(const Options& o, const DriverConfig& config,
                     std::shared_ptr<const std::string> request) {
  HttpRun run(o, config, std::move(request));
  return run.Run();
}

absl::StatusOr<std::string> HttpOnce(const Options& o, const std::string& request) {
  asio::io_context io;
  tcp::socket socket(io);
  beast::error_code ec;
  asio::ip::address address = asio::ip::make_address(o.host, ec);
  if (ec) return absl::InvalidArgumentError(absl::StrCat("--host must be an IP address: ", o.host));
  socket.connect(tcp::endpoint(address, static_cast<uint16_t>(o.port)), ec);
  if (ec) {
    return absl::UnavailableError(
        absl::StrCat("connect to ", o.host, ":", o.port, ": ", ec.message()));
  }
  asio::write(socket, asio::buffer(request), ec);
  if (ec) return absl::UnavailableError(absl::StrCat("write: ", ec.message()));
  beast::flat_buffer buffer;
  http::response_parser<http::string_body> parser;
  parser.body_limit(kBodyLimitBytes);
  http::read(socket, buffer, parser, ec);
  if (ec) return absl::UnavailableError(absl::StrCat("read: ", ec.message()));
  if (parser.get().result_int() != 200) {
    return absl::FailedPreconditionError(
        absl::StrCat("HTTP ", parser.get().result_int(), ": ", parser.get().body().substr(0, 300)));
  }
  return std::move(parser.get().body());
}

}  // namespace ferry::loadgen
