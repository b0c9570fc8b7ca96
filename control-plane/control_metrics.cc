#include "control-plane/control_metrics.h"

#include <sstream>

#include "prometheus/counter.h"
#include "prometheus/gauge.h"
#include "prometheus/registry.h"
#include "prometheus/text_serializer.h"

namespace ferry::control {

std::string RenderControlMetrics(const v1::ListFunctionsResponse& functions,
                                 const Gateway::Stats* gateway) {
  prometheus::Registry registry;
  auto& desired = prometheus::BuildGauge()
                      .Name("ferry_function_desired_replicas")
                      .Help("Replicas the control plane wants for the function (autoscaler)")
                      .Register(registry);
  auto& ready = prometheus::BuildGauge()
                    .Name("ferry_function_ready_replicas")
                    .Help("Replicas of the function serving (not draining)")
                    .Register(registry);
  auto& draining = prometheus::BuildGauge()
                       .Name("ferry_function_draining_replicas")
                       .Help("Replicas being scaled down: no new routes, finishing their work")
                       .Register(registry);
  auto& rps = prometheus::BuildGauge()
                  .Name("ferry_function_observed_rps")
                  .Help("Arrival rate over the autoscaler's stable window, requests per second")
                  .Register(registry);
  auto& panic = prometheus::BuildGauge()
                    .Name("ferry_function_autoscaler_panic")
                    .Help("1 while the function's autoscaler is in panic mode")
                    .Register(registry);
  for (const auto& f : functions.functions()) {
    const std::map<std::string, std::string> labels = {{"function", f.name()}};
    desired.Add(labels).Set(f.desired_replicas());
    ready.Add(labels).Set(f.ready_replicas());
    draining.Add(labels).Set(f.draining_replicas());
    rps.Add(labels).Set(f.observed_rps());
    panic.Add(labels).Set(f.panic() ? 1 : 0);
  }
  if (gateway != nullptr) {
    prometheus::BuildCounter()
        .Name("ferry_gateway_requests_total")
        .Help("Requests the gateway forwarded and answered")
        .Register(registry)
        .Add({})
        .Increment(static_cast<double>(gateway->requests));
    prometheus::BuildCounter()
        .Name("ferry_gateway_held_requests_total")
        .Help("Requests held for a function without a ready replica (scale from zero)")
        .Register(registry)
        .Add({})
        .Increment(static_cast<double>(gateway->held));
    prometheus::BuildGauge()
        .Name("ferry_gateway_held_requests")
        .Help("Requests held right now")
        .Register(registry)
        .Add({})
        .Set(static_cast<double>(gateway->held_now));
    prometheus::BuildCounter()
        .Name("ferry_gateway_hold_timeouts_total")
        .Help("Held requests answered 503 after the hold timeout")
        .Register(registry)
        .Add({})
        .Increment(static_cast<double>(gateway->hold_timeouts));
  }
  std::ostringstream out;
  prometheus::TextSerializer().Serialize(out, registry.Collect());
  return out.str();
}

}  // namespace ferry::control
