#include "node-agent/log_limiter.h"

#include <cstdio>
#include <string>

#include "absl/strings/str_cat.h"
#include "google/protobuf/stubs/logging.h"

namespace ferry::agent {

LogLimiter::LogLimiter(int lines_per_second, Clock* clock)
    : lines_per_second_(lines_per_second), clock_(clock != nullptr ? clock : RealClock::Get()) {}

int64_t LogLimiter::Admit() {
  const int64_t now_us = clock_->NowMicros();
  absl::MutexLock lock(&mu_);
  if (lines_in_window_ == 0 || now_us - window_start_us_ >= 1'000'000) {
    window_start_us_ = now_us;
    lines_in_window_ = 0;
  }
  if (lines_in_window_ >= lines_per_second_) {
    ++dropped_;
    return -1;
  }
  ++lines_in_window_;
  const int64_t dropped = dropped_;
  dropped_ = 0;
  return dropped;
}

namespace {

// protobuf's handler is a plain function pointer, so its state lives here; set once at start.
LogLimiter* g_limiter = nullptr;
std::string* g_prefix = nullptr;

void LimitedProtobufLog(google::protobuf::LogLevel level, const char* filename, int line,
                        const std::string& message) {
  const int64_t dropped = g_limiter->Admit();
  if (dropped < 0) return;
  const char* severity = level >= google::protobuf::LOGLEVEL_ERROR ? "error" : "warning";
  const std::string text =
      absl::StrCat(*g_prefix, "protobuf ", severity, " (", filename, ":", line, "): ", message,
                   dropped > 0 ? absl::StrCat(" [", dropped, " similar lines dropped]") : "", "\n");
  std::fwrite(text.data(), 1, text.size(), stderr);
}

}  // namespace

void InstallProtobufLogLimiter(const std::string& prefix, int lines_per_second) {
  // Deliberately leaked: protobuf may log until the process exits.
  g_limiter = new LogLimiter(lines_per_second, nullptr);
  g_prefix = new std::string(prefix);
  google::protobuf::SetLogHandler(&LimitedProtobufLog);
}

}  // namespace ferry::agent
