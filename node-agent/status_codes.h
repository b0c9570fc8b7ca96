// One mapping from absl::Status codes to protocol status codes, shared by the front ends so HTTP
// and gRPC clients see the same classes of error.
#ifndef FERRY_NODE_AGENT_STATUS_CODES_H_
#define FERRY_NODE_AGENT_STATUS_CODES_H_

#include "absl/status/status.h"

namespace ferry::agent {

// InvalidArgument/FailedPrecondition 400, NotFound 404, OutOfRange 413 (body too large),
// ResourceExhausted 429, Unimplemented 501, Unavailable 503, DeadlineExceeded 504, else 500.
int HttpStatusFor(const absl::Status& status);

}  // namespace ferry::agent

#endif  // FERRY_NODE_AGENT_STATUS_CODES_H_
