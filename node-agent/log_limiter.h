// Bounds how fast a source of log lines that clients can trigger may write: protobuf logs one
// ERROR line for every message with a string field that is not UTF-8, so without a limit any
// client could fill the agent's log (and its disk) at the rate it sends requests.
#ifndef FERRY_NODE_AGENT_LOG_LIMITER_H_
#define FERRY_NODE_AGENT_LOG_LIMITER_H_

#include <cstdint>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "ferry/clock.h"

namespace ferry::agent {

// Lets through at most `lines_per_second` lines per one-second window of `clock`. Thread-safe.
class LogLimiter {
 public:
  // `clock` is not owned and must outlive the limiter; nullptr = RealClock::Get().
  LogLimiter(int lines_per_second, Clock* clock);

  // -1: drop this line. Otherwise write it; the value is how many lines were dropped since the
  // last one let through (worth saying in the line).
  int64_t Admit();

 private:
  const int lines_per_second_;
  Clock* const clock_;
  absl::Mutex mu_;
  int64_t window_start_us_ ABSL_GUARDED_BY(mu_) = 0;
  int lines_in_window_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t dropped_ ABSL_GUARDED_BY(mu_) = 0;
};

// Sends protobuf's log lines to stderr as "<prefix>protobuf: <message>", at most
// `lines_per_second` of them per second. Call once at start-up, before other threads run
// (protobuf's SetLogHandler is not thread-safe).
void InstallProtobufLogLimiter(const std::string& prefix, int lines_per_second = 5);

}  // namespace ferry::agent

#endif  // FERRY_NODE_AGENT_LOG_LIMITER_H_
