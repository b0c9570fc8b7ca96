#include "perf/loadgen/options.h"

#include <functional>
#include <map>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace ferry::loadgen {
namespace {

absl::Status Bad(absl::string_view flag, absl::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat("--", flag, ": ", why));
}

absl::Status ParseInt(absl::string_view flag, const std::string& v, int min, int* out) {
  if (!absl::SimpleAtoi(v, out)) return Bad(flag, absl::StrCat("not an integer: '", v, "'"));
  if (*out < min) return Bad(flag, absl::StrCat("must be >= ", min, ", got ", *out));
  return absl::OkStatus();
}

absl::Status ParseDouble(absl::string_view flag, const std::string& v, double min, bool strict,
                         double* out) {
  if (!absl::SimpleAtod(v, out)) return Bad(flag, absl::StrCat("not a number: '", v, "'"));
  if (*out < min || (strict && *out == min)) {
    return Bad(flag, absl::StrCat("must be ", strict ? "> " : ">= ", min, ", got ", v));
  }
  return absl::OkStatus();
}

}  // namespace

const char* ProtocolName(Protocol p) {
  switch (p) {
    case Protocol::kJson:
      return "json";
    case Protocol::kBinary:
      return "binary";
    case Protocol::kClipper:
      return "clipper";
    case Protocol::kGrpc:
      return "grpc";
  }
  return "?";
}

const char* WorkloadName(WorkloadKind w) {
  switch (w) {
    case WorkloadKind::kEcho:
      return "echo";
    case WorkloadKind::kWordfilter:
      return "wordfilter";
    case WorkloadKind::kMlp:
      return "mlp";
  }
  return "?";
}

std::string Usage() {
  return R"(ferry-loadgen: open- and closed-loop load on a ferry agent (or any KServe v2 server)

  ferry-loadgen --port 8000 --protocol json --workload echo --rates 1000,2000,4000
  ferry-loadgen --port 8001 --protocol grpc --mode closed --connections 32 --duration 10

  --host H              server address (127.0.0.1)
  --port P              HTTP or gRPC port (8000)
  --protocol X          json | binary (KServe v2 binary tensor extension) | clipper | grpc
  --workload W          echo (one BYTES element) | wordfilter (--docs text messages) |
                        mlp (FP32 [--rows, --features], e.g. the examples' mlp function)
  --model NAME          function name (default: the workload's name)
  --input NAME          input tensor name (INPUT0 for echo, text for wordfilter, input for mlp)
  --payload-bytes N     echo element size (1024)
  --docs N              wordfilter messages per request (10)
  --rows N              mlp rows per request (1)
  --features N          mlp values per row (64)
  --batch-dim           echo, wordfilter: shape [1, n] instead of [n] (Triton with batching)
  --mode open|closed    open: requests at scheduled times; closed: --connections clients
  --arrivals poisson|constant   open-loop inter-arrival times (poisson)
  --rates R1,R2,...     open loop: requests/s, one run per rate (--rate R for one)
  --connections N       open: connections opened up front (32); closed: clients; gRPC: channels
  --max-connections N   open HTTP: the pool may grow to this when all are busy (1024)
  --threads N           event-loop threads, each with its share of rate and connections (1)
  --warmup S            seconds before the measured window (2)
  --duration S          measured window, seconds (10)
  --drain S             after the window, how long measured requests may still take (5)
  --late-us U           a request sent more than U µs after its scheduled time counts late (1000)
  --seed N              RNG seed of the Poisson schedule (1)
  --label TEXT          first column of the CSV row
  --csv FILE            append one row per run (header when the file is new)
  --raw FILE            write every measured latency (label,rate,latency_us)
  --no-check            skip the one checked request before measuring
)";
}

absl::StatusOr<Options> ParseOptions(const std::vector<std::string>& args) {
  Options o;
  bool rates_given = false;
  bool connections_given = false;
  using Setter = std::function<absl::Status(const std::string&)>;
  const std::map<std::string, Setter> setters = {
      {"host",
       [&](const std::string& v) {
         o.host = v;
         return absl::OkStatus();
       }},
      {"port",
       [&](const std::string& v) {
         absl::Status s = ParseInt("port", v, 1, &o.port);
         if (s.ok() && o.port > 65535) return Bad("port", "must be <= 65535");
         return s;
       }},
      {"protocol",
       [&](const std::string& v) {
         if (v == "json")
           o.protocol = Protocol::kJson;
         else if (v == "binary")
           o.protocol = Protocol::kBinary;
         else if (v == "clipper")
           o.protocol = Protocol::kClipper;
         else if (v == "grpc")
           o.protocol = Protocol::kGrpc;
         else
           return Bad("protocol", absl::StrCat("unknown '", v, "' (json|binary|clipper|grpc)"));
         return absl::OkStatus();
       }},
      {"workload",
       [&](const std::string& v) {
         if (v == "echo")
           o.workload = WorkloadKind::kEcho;
         else if (v == "wordfilter")
           o.workload = WorkloadKind::kWordfilter;
         else if (v == "mlp")
           o.workload = WorkloadKind::kMlp;
         else
           return Bad("workload", absl::StrCat("unknown '", v, "' (echo|wordfilter|mlp)"));
         return absl::OkStatus();
       }},
      {"model",
       [&](const std::string& v) {
         o.model = v;
         return absl::OkStatus();
       }},
      {"input",
       [&](const std::string& v) {
         o.input = v;
         return absl::OkStatus();
       }},
      {"payload-bytes",
       [&](const std::string& v) { return ParseInt("payload-bytes", v, 0, &o.payload_bytes); }},
      {"docs", [&](const std::string& v) { return ParseInt("docs", v, 1, &o.docs); }},
      {"rows", [&](const std::string& v) { return ParseInt("rows", v, 1, &o.rows); }},
      {"features", [&](const std::string& v) { return ParseInt("features", v, 1, &o.features); }},
      {"mode",
       [&](const std::string& v) {
         if (v == "open")
           o.mode = Mode::kOpen;
         else if (v == "closed")
           o.mode = Mode::kClosed;
         else
           return Bad("mode", absl::StrCat("unknown '", v, "' (open|closed)"));
         return absl::OkStatus();
       }},
      {"arrivals",
       [&](const std::string& v) {
         if (v == "poisson")
           o.arrivals = Arrivals::kPoisson;
         else if (v == "constant")
           o.arrivals = Arrivals::kConstant;
         else
           return Bad("arrivals", absl::StrCat("unknown '", v, "' (poisson|constant)"));
         return absl::OkStatus();
       }},
      {"rates",
       [&](const std::string& v) {
         rates_given = true;
         o.rates.clear();
         for (absl::string_view part : absl::StrSplit(v, ',')) {
           double r;
           absl::Status s = ParseDouble("rates", std::string(part), 0, /*strict=*/true, &r);
           if (!s.ok()) return s;
           o.rates.push_back(r);
         }
         return absl::OkStatus();
       }},
      {"connections",
       [&](const std::string& v) {
         connections_given = true;
         return ParseInt("connections", v, 1, &o.connections);
       }},
      {"max-connections",
       [&](const std::string& v) { return ParseInt("max-connections", v, 1, &o.max_connections); }},
      {"threads", [&](const std::string& v) { return ParseInt("threads", v, 1, &o.threads); }},
      {"warmup",
       [&](const std::string& v) { return ParseDouble("warmup", v, 0, false, &o.warmup_s); }},
      {"duration",
       [&](const std::string& v) { return ParseDouble("duration", v, 0, true, &o.duration_s); }},
      {"drain",
       [&](const std::string& v) { return ParseDouble("drain", v, 0, false, &o.drain_s); }},
      {"late-us",
       [&](const std::string& v) { return ParseDouble("late-us", v, 0, false, &o.late_us); }},
      {"seed",
       [&](const std::string& v) {
         if (!absl::SimpleAtoi(v, &o.seed))
           return Bad("seed", absl::StrCat("not an integer: '", v, "'"));
         return absl::OkStatus();
       }},
      {"label",
       [&](const std::string& v) {
         o.label = v;
         return absl::OkStatus();
       }},
      {"csv",
       [&](const std::string& v) {
         o.csv_path = v;
         return absl::OkStatus();
       }},
      {"raw",
       [&](const std::string& v) {
         o.raw_path = v;
         return absl::OkStatus();
       }},
  };
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (arg == "--help" || arg == "-h") return absl::FailedPreconditionError(Usage());
    if (arg == "--no-check") {
      o.check = false;
      continue;
    }
    if (arg == "--batch-dim") {
      o.batch_dim = true;
      continue;
    }
    if (!arg.starts_with("--")) {
      return absl::InvalidArgumentError(absl::StrCat("unexpected argument '", arg, "'"));
    }
    std::string name = arg.substr(2);
    std::string value;
    bool has_value = false;
    if (size_t eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
      has_value = true;
    }
    if (name == "rate") {
      name = "rates";  // one rate is a sweep of one
    }
    auto it = setters.find(name);
    if (it == setters.end()) {
      return absl::InvalidArgumentError(absl::StrCat("unknown flag --", name));
    }
    if (!has_value) {
      if (i + 1 >= args.size()) return Bad(name, "needs a value");
      value = args[++i];
    }
    if (absl::Status s = it->second(value); !s.ok()) return s;
  }
  if (o.model.empty()) o.model = WorkloadName(o.workload);
  if (o.input.empty()) {
    o.input = o.workload == WorkloadKind::kEcho         ? "INPUT0"
              : o.workload == WorkloadKind::kWordfilter ? "text"
                                                        : "input";
  }
  if (o.workload == WorkloadKind::kMlp && o.protocol == Protocol::kClipper) {
    return Bad("workload", "mlp sends an FP32 tensor: use json, binary or grpc, not clipper");
  }
  if (o.mode == Mode::kOpen && !rates_given) {
    return Bad("rates", "open loop needs at least one rate (or --mode closed)");
  }
  if (o.mode == Mode::kClosed && rates_given) {
    return Bad("rates", "closed loop takes no rates: its rate is what the server answers");
  }
  if (o.mode == Mode::kOpen && o.max_connections < o.connections) {
    if (connections_given) o.max_connections = o.connections;
  }
  if (o.threads > o.connections) {
    return Bad("threads", absl::StrCat("more threads (", o.threads, ") than connections (",
                                       o.connections, ")"));
  }
  return o;
}

}  // namespace ferry::loadgen
