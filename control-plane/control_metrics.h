// ferry-control's Prometheus metrics (served by the gateway at GET /metrics): per function the
// desired, ready and draining replica counts, the autoscaler's observed arrival rate and whether
// it panics; and the gateway's hold counters.
#ifndef FERRY_CONTROL_PLANE_CONTROL_METRICS_H_
#define FERRY_CONTROL_PLANE_CONTROL_METRICS_H_

#include <string>

#include "control-plane/gateway.h"
#include "ferry_control.pb.h"

namespace ferry::control {

// The text exposition format (0.0.4) of `functions` and, when not null, the gateway's stats.
// Pure; builds a fresh registry per call so deleted functions leave no series behind.
std::string RenderControlMetrics(const v1::ListFunctionsResponse& functions,
                                 const Gateway::Stats* gateway);

}  // namespace ferry::control

#endif  // FERRY_CONTROL_PLANE_CONTROL_METRICS_H_
